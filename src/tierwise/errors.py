"""The one exception tree of tierwise.

```
TierwiseError
├── ConfigError              bad configuration; raised at start-up only
├── RequestError             the request is wrong or cannot be served now (HTTP 400/404/413/503);
│                            .param, .status, .retry_after
├── AccessDenied             no key, an unknown or revoked key (401), a model or tier not granted (403)
├── BudgetExceeded           a key's or tenant's budget is spent (HTTP 429); .retry_after, .reset_at
├── RateLimited              a key's or tenant's requests or tokens per minute are used up (HTTP 429)
├── StateUnavailable         the state store cannot answer what must not fail open (HTTP 503)
├── LedgerUnavailable        the ledger's store cannot answer now; .retry_after
├── ChainExhausted           every model of the Decision failed; .attempts
├── DatasetError             an evaluation or training dataset cannot be read (tierwise eval / train)
└── ProviderError            one upstream attempt failed; .model, .status
    ├── UpstreamTimeout          retry, then fall back
    ├── UpstreamUnavailable      5xx, refused or reset connection
    ├── UpstreamRateLimited      429; .retry_after
    ├── UpstreamRejected         other 4xx: the request is wrong for this upstream, do not retry
    └── StreamInterrupted        the upstream stream broke after it had started
```

Foreign exceptions (the HTTP client's, asyncpg, redis …) are translated where they are raised, so dispatch
chooses between retry, fallback and failure by class alone. Messages never carry secrets.
"""

from __future__ import annotations

from dataclasses import dataclass


class TierwiseError(Exception):
    """Base class of every error tierwise raises on purpose."""

    # The id of the request whose ledger row records this failure, when it has one: the gateway sends
    # it as x-tierwise-request-id with the error, so a client can quote the row.
    request_id: str | None = None


class ConfigError(TierwiseError):
    """The configuration is invalid; the message names the field path and what was expected."""


class RequestError(TierwiseError):
    """The client's request is malformed or cannot be served as asked."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int = 400,
        code: str | None = None,
        type: str = "invalid_request_error",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code
        self.type = type
        self.retry_after = retry_after  # seconds, sent as Retry-After


class AccessDenied(TierwiseError):
    """The request's key is missing, unknown or revoked (401, ``invalid_api_key``), or it asks for a
    model or tier its key does not grant (403, ``model_not_allowed``). Never carries key material."""

    def __init__(self, message: str, *, status: int = 401, code: str = "invalid_api_key") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class BudgetExceeded(TierwiseError):
    """A virtual key or tenant has spent its budget. ``reset_at``: unix time the period ends."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, reset_at: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.reset_at = reset_at


class RateLimited(TierwiseError):
    """A key's or tenant's requests or tokens per minute are used up. ``headers``: the
    ``x-ratelimit-*`` headers OpenAI sends, computed for the limit that refused."""

    def __init__(self, message: str, *, retry_after: float, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.headers = headers


class StateUnavailable(TierwiseError):
    """The state store cannot be reached for something that must not fail open (a key lookup)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class LedgerUnavailable(TierwiseError):
    """The ledger's store is down or unreachable: what needs it now (feedback, reads) fails at once
    instead of waiting. ``retry_after``: seconds until the ledger next tries the store."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class DatasetError(TierwiseError):
    """A dataset cannot be read: the message names the file, the row and the column at fault."""


class ProviderError(TierwiseError):
    """One upstream attempt failed."""

    retryable = True

    def __init__(self, message: str, *, model: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.model = model
        self.status = status


class UpstreamTimeout(ProviderError):
    """The upstream did not answer within the attempt's timeout."""


class UpstreamUnavailable(ProviderError):
    """The upstream answered 5xx, or the connection was refused or reset."""


class UpstreamRateLimited(ProviderError):
    """The upstream answered 429; ``retry_after`` is its Retry-After in seconds, if it sent one."""

    def __init__(
        self, message: str, *, model: str, status: int | None = 429, retry_after: float | None = None
    ) -> None:
        super().__init__(message, model=model, status=status)
        self.retry_after = retry_after


class UpstreamRejected(ProviderError):
    """The upstream refused the request itself (4xx other than 429): retrying cannot help."""

    retryable = False


class StreamInterrupted(ProviderError):
    """The upstream stream broke after it had begun sending."""


@dataclass(frozen=True, slots=True)
class AttemptFailure:
    """One failed attempt, as reported to the client when the whole chain fails."""

    model: str
    error: str  # class name, e.g. "UpstreamTimeout"
    message: str
    status: int | None = None


class ChainExhausted(TierwiseError):
    """Every model of the decision's chain failed (or was skipped)."""

    def __init__(self, failures: list[AttemptFailure]) -> None:
        self.failures = failures
        if self.too_long:
            windows = ", ".join(f"{f.model}: {f.message}" for f in failures)
            super().__init__(
                f"messages: no model this request was routed to can fit it ({windows}); shorten the "
                "messages, lower max_tokens, or name a model with a larger context window"
            )
            return
        super().__init__(f"all upstream models failed: {_describe(failures)}")

    @property
    def too_long(self) -> bool:
        """Every model was skipped because the request exceeds its context window: the client's to fix."""
        return bool(self.failures) and all(f.error == "ContextTooLong" for f in self.failures)

    @property
    def code(self) -> str:
        """The OpenAI-style error code for :attr:`status`."""
        if self.too_long:
            return "context_length_exceeded"
        return "upstream_rejected" if self.status == 400 else "all_upstreams_failed"

    @property
    def status(self) -> int:
        """HTTP status that best describes the failure: 400 if every upstream rejected the request
        itself (it is the client's to fix), 504 if all timed out, 503 if every model was skipped or
        rate limited, else 502; 400 too if the request fits no model's context window."""
        if self.too_long:
            return 400
        errors = {f.error for f in self.failures}
        if errors == {"UpstreamRejected"} and any(f.status in (400, 413, 422) for f in self.failures):
            return 400
        if errors and errors <= {"UpstreamTimeout"}:
            return 504
        if not errors or errors <= {"UpstreamRateLimited", "ContextTooLong"}:
            return 503
        return 502


def _describe(failures: list[AttemptFailure]) -> str:
    """``m1: UpstreamTimeout: …; m2: …``, with models that failed alike named once: ``m1, m2: <why>``."""
    if not failures:
        return "no model could be tried"
    grouped: dict[tuple[str, str], list[str]] = {}
    for f in failures:
        # Adapters prefix their messages with the model's name: drop it so equal reasons group.
        reason = f.message.removeprefix(f"{f.model}: ")
        grouped.setdefault((f.error, reason), []).append(f.model)
    return "; ".join(
        f"{', '.join(dict.fromkeys(models))}: {error}: {reason}"
        for (error, reason), models in grouped.items()
    )
