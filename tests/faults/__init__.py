"""The fault-injection suite (a package, so that its conftest does not
shadow the integration suite's when both are collected together)."""
