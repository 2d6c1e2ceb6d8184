"""Infrastructure as code: the CustomerInstance component and its parts."""
