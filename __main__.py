"""The Iotistic Pulumi program: one stack per customer, the stack name is the customer id.

Stack configuration is read here, at the edge, and handed to components as typed args.
"""

import pulumi
import pulumi_random as random

customer_id = pulumi.get_stack()

# The customer's database password: generated once, stored only as a Pulumi secret.
database_password = random.RandomPassword("postgres-password", length=32, special=False)

pulumi.export("customerId", customer_id)
pulumi.export("databasePassword", database_password.result)
