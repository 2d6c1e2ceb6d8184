"""The labels a customer's namespace carries, in a module of plain constants: the policy pack
reads them in every preview and update, and must not import the Kubernetes SDK to do so."""

# Read back by policy/ (and anyone with kubectl): whose namespace it is, its plan, its environment.
CUSTOMER_LABEL = "customer-id"
PLAN_LABEL = "iotistic.io/plan"
# "production" makes the policy pack's image-tag rule mandatory (stack config iotistic:environment).
ENVIRONMENT_LABEL = "iotistic.io/environment"
PRODUCTION = "production"
DEFAULT_ENVIRONMENT = "development"
