"""Template context shared by every portal page (and the admin's)."""

from portal import sandbox


def sandbox_status(request) -> dict:
    """``sandbox_off``: True for staff while notebooks run unsandboxed (KERNEL_SANDBOX=none),
    so every staff page can say so in red."""
    user = getattr(request, "user", None)
    return {"sandbox_off": bool(user is not None and user.is_staff and not sandbox.enabled())}
