# A package, so that pytest imports this suite's conftest under its own name.
