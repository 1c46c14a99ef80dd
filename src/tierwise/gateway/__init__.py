"""The HTTP gateway: parse, call the Router, serialize."""
