"""Dispatch-time routing policy: pure functions of Features, fleet and a state snapshot."""
