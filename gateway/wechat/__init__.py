"""WeChat (微信) server API: mini-program URL Links minted for share links."""

__all__: list[str] = []
