"""The REST API: personal API tokens with scopes, the JSON error format, and the
endpoints (Django REST framework, OpenAPI 3 through drf-spectacular) over the same
services and scoped queries as the pages."""
