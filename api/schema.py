"""drf-spectacular's description of the token authentication: HTTP bearer."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class TokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.TokenAuthentication"
    name = "token"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token (pap_...), made on the portal's API tokens "
            "page, with the scopes the call needs: read, run, jobs or clusters.",
        }
