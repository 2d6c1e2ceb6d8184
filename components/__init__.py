"""Infrastructure as code: the CustomerInstance component and its parts."""

from components.args import CustomerInstanceArgs, Images, Networking, Storage
from components.customer_instance import CustomerInstance

__all__ = ["CustomerInstance", "CustomerInstanceArgs", "Images", "Networking", "Storage"]
