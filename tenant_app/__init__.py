"""The code behind the customer instance images: API, dashboard, billing exporter."""
