"""WeCom (企业微信): callback crypto, the API client, entry points and callbacks."""

__all__: list[str] = []
