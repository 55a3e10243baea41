"""The public HTTP API: routes, the viewset, its serializers, renderers, responses and errors."""
