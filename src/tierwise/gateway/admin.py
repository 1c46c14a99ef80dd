"""The admin API under ``/admin/``, opened by the master key (``auth.master_key_env``).

``POST /admin/keys`` ``{"tenant": …, "id"?: …, "allowed_tiers"?, "allowed_models"?, "user_tier"?,
"budget"?, "rate_limits"?}`` creates a key and answers its secret, once. ``GET /admin/keys`` lists keys,
``GET /admin/keys/{id}`` shows one with its spend, ``POST /admin/keys/{id}/revoke`` (or ``DELETE``)
revokes it on every replica. Keys are named by id only: a secret in a URL would end up in access logs.
"""

from __future__ import annotations

from typing import Any

from ..errors import AccessDenied, RequestError
from ..router import Router
from .auth import presented_key
from .responses import json_response
from .web import App, Request, Response


def add_routes(app: App, router: Router) -> None:
    """Register the admin endpoints of ``router`` on ``app``."""

    def guarded(handler: Any) -> Any:
        async def wrapper(request: Request) -> Response:
            access = router.access
            if not access.is_master(presented_key(request.headers)):
                raise AccessDenied(
                    f"the admin API needs the master key (the {access.config.auth.master_key_env} "
                    "variable of the gateway), sent as 'Authorization: Bearer <key>'"
                )
            return await handler(request)

        return wrapper

    async def create(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            raise RequestError("request body: invalid JSON; expected an object with a tenant") from None
        if not isinstance(body, dict) or not isinstance(body.get("tenant"), str):
            raise RequestError("tenant: required, a tenant name of the config", param="tenant")
        fields = {k: v for k, v in body.items() if k not in ("tenant", "id")}
        key_id = body.get("id")
        if key_id is not None and not isinstance(key_id, str):
            raise RequestError("id: must be a string", param="id")
        record, secret = await router.access.keys.create(body["tenant"], key_id=key_id, grants=fields)
        return json_response({"object": "key", **record.to_json(), "key": secret}, status=201)

    async def listing(request: Request) -> Response:
        records = await router.access.keys.all()
        return json_response({"object": "list", "data": [r.to_json() for r in records]})

    async def show(request: Request) -> Response:
        record = await router.access.keys.find(request.match_info["key_id"])
        spent = await router.access.spent("key", record.id)
        return json_response({"object": "key", **record.to_json(), "spent_usd": spent})

    async def revoke(request: Request) -> Response:
        record = await router.access.keys.revoke(request.match_info["key_id"])
        return json_response({"object": "key", **record.to_json()})

    app.add_post("/admin/keys", guarded(create))
    app.add_get("/admin/keys", guarded(listing))
    app.add_get("/admin/keys/{key_id}", guarded(show))
    app.add_post("/admin/keys/{key_id}/revoke", guarded(revoke))
    app.add_delete("/admin/keys/{key_id}", guarded(revoke))
