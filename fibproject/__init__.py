"""Django project wiring for the Fibonacci service."""
