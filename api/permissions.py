"""Scopes: each API view names the scope each of its actions needs."""

from rest_framework import permissions

#: The scope an unsafe request needs when a view names none for its action.
READ = "read"


class HasScope(permissions.BasePermission):
    """Allow a token request only if its token has the scope the action needs.

    The scope is ``view.scopes[action]`` (``action`` as DRF names it: "list", "create",
    "run"...), else "read" for GET/HEAD/OPTIONS. Session requests (the browser) are not
    limited by scopes. A missing scope is a 403 naming it.
    """

    def has_permission(self, request, view) -> bool:
        token = request.auth
        if token is None or not hasattr(token, "scopes"):
            return True
        scope = required_scope(request, view)
        if scope in token.scopes:
            return True
        self.message = f"This token lacks the scope “{scope}”."
        self.code = "missing_scope"
        return False


def required_scope(request, view) -> str:
    """The scope ``request`` needs on ``view``."""
    action = getattr(view, "action", None)
    scopes = getattr(view, "scopes", {})
    if action in scopes:
        return scopes[action]
    return READ if request.method in permissions.SAFE_METHODS else scopes.get("*", READ)
