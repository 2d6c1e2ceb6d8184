"""Policy as code: the rules every preview and up of this project obeys (pulumi-policy)."""
