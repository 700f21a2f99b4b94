"""HTTP plumbing every surface shares (gateway, tracker, web, model servers): the error
shape, the operator gate, request authentication and the session cookies with their
CSRF check. It sits below every package that serves HTTP, so none of them imports
another's routes to reach it."""
