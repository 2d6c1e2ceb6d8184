"""What the platform's Python services share: JSON logs and the production WSGI server."""
