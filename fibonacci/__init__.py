"""The Fibonacci service: API, rate limits and request log."""
