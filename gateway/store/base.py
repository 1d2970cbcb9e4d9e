"""The storage contract: what the gateway asks of any engine, and the records it passes.

Every method that reads or changes a merchant's data takes the merchant id and scopes its
query by it: tenant isolation lives here, not in the callers' good intentions. The one
unscoped read is ``link(code)``, the shopper's hot path, which returns the product whose
merchant the share code itself names.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:  # gateway/secretbox.py imports this module
    from ..secretbox import SecretBox

__all__ = [
    "COUNTERS",
    "METRICS",
    "NEVER",
    "OUTCOMES",
    "PRODUCT_CHANGES",
    "PRODUCT_STATES",
    "Alert",
    "Channel",
    "ChannelExists",
    "Click",
    "CodeTaken",
    "Contact",
    "Credentials",
    "Entry",
    "EntryKind",
    "EntryWay",
    "Event",
    "EventKind",
    "InboxItem",
    "Merchant",
    "MerchantExists",
    "MintKind",
    "MintedLink",
    "NewProduct",
    "Product",
    "ProductState",
    "StatsRow",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "User",
    "UserExists",
]

#: ``chat``: a contact's first chat (WeCom 获客助手 ``customer_start_chat``); ``lost``: a
#: contact deleted by either side (``del_external_contact``, ``del_follow_user``).
EventKind = Literal["storefront_open", "entry", "add", "chat", "lost"]
EntryKind = Literal["acquisition_link", "contact_way", "group", "static"]
#: What the gateway mints for a share link through WeChat's API (gateway/wechat/links.py).
MintKind = Literal["url_link", "scheme", "wxacode"]
#: ``total``: one row for everything the filters keep.
GroupBy = Literal["platform", "product", "day", "channel", "total"]
#: Roles a dashboard login may have (API tokens may also be ``admin``).
StaffRole = Literal["merchant", "marketing"]

#: (merchant_id, product_id, day, platform, channel): one row of the per-day rollups
#: (gateway/store/rollup.py); channel '' is "no ``?ch=`` channel".
RollupKey = tuple[str, int, str, str, str]
#: (merchant_id, kind, period, product_id, platform, channel): one visitor sketch.
SketchKey = tuple[str, str, str, int, str, str]
#: Where a product stands for shoppers: its share link serves it (``live``), says "not yet"
#: (``scheduled``: before ``valid_from``), "ended" (``ended``: from ``valid_until`` on), or
#: is gone (``retired``).
ProductState = Literal["live", "scheduled", "ended", "retired"]
PRODUCT_STATES: tuple[ProductState, ...] = ("live", "scheduled", "ended", "retired")
#: What ``Store.update_product`` may change.
PRODUCT_CHANGES = frozenset({"title", "image_url", "price", "targets", "status", "valid_from",
                             "valid_until"})

#: What the share link did with a click (``Click.outcome``): sent it straight to a storefront
#: or mini-program, showed the landing page, showed it with the open-in-browser guide (the
#: app blocks the target), showed a bot the preview, or said the link is gone. '' for clicks
#: recorded before outcomes were (they count in ``clicks`` only).
OUTCOMES = ("redirect", "landing", "guide", "preview", "gone")

#: Figures of a stats row, in the order reports show them.
METRICS = ("clicks", "unique_visitors", "bot_clicks", "redirects", "landings", "guides",
           "storefront_opens", "entries", "adds", "chats", "lost_contacts")
#: The figures rollups keep as sums: all but unique visitors, which are merged sketches.
COUNTERS = tuple(m for m in METRICS if m != "unique_visitors")


class StoreError(Exception):
    """Base of the errors an engine raises on purpose."""


class StoreUnavailable(StoreError):
    """The database cannot be reached right now; the caller may retry."""


class CodeTaken(StoreError):
    """The share code or slug already belongs to a link."""


class MerchantExists(StoreError):
    """A merchant with that id already exists."""


class UserExists(StoreError):
    """A staff login with that email already exists."""


class ChannelExists(StoreError):
    """The merchant already has a channel of that name."""


@dataclass(frozen=True, slots=True)
class Merchant:
    id: str
    name: str
    domains: tuple[str, ...] = ()
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Product:
    id: int
    merchant_id: str
    code: str
    title: str
    targets: Mapping[str, Mapping[str, str]]
    image_url: str | None = None
    price: str | None = None
    status: Literal["active", "retired"] = "active"
    created_at: float = 0.0
    updated_at: float = 0.0
    #: Optional sales window (Unix seconds): before ``valid_from`` and from ``valid_until``
    #: on, the share link shows a "not yet" / "ended" page (and still counts the click).
    valid_from: float | None = None
    valid_until: float | None = None

    @property
    def retired(self) -> bool:
        return self.status == "retired"

    def state(self, now: float) -> ProductState:
        """Where the product stands for a shopper at ``now``."""
        if self.retired:
            return "retired"
        if self.valid_from is not None and now < self.valid_from:
            return "scheduled"
        if self.valid_until is not None and now >= self.valid_until:
            return "ended"
        return "live"


@dataclass(frozen=True, slots=True)
class NewProduct:
    """A checked product to create (``Store.create_products`` takes many at once)."""

    code: str
    title: str
    targets: Mapping[str, Mapping[str, str]]
    image_url: str | None = None
    price: str | None = None
    valid_from: float | None = None
    valid_until: float | None = None


@dataclass(frozen=True, slots=True)
class Channel:
    """A named ``?ch=`` channel (a KOL, a livestream, a poster) a merchant made."""

    merchant_id: str
    #: What the link carries: ``?ch=<name>`` (a-z, 0-9, _; at most 32).
    name: str
    #: What people call it (``李佳琦直播间``); may be empty.
    label: str = ""
    created_at: float = 0.0


# Click and Event are rows: made once per request on the hot path, queued, and handed to a
# writer process whole. Named tuples, because a tuple is the cheapest record Python makes
# (a positional Click is ~0.5 us; a slotted dataclass built by keyword was ~2.4 us) and
# crosses a pipe as it is.
class Click(NamedTuple):
    """One share-link visit: the wristband ``id`` follows the shopper to the WeCom add."""

    id: str
    merchant_id: str
    product_id: int
    ts: float
    day: str
    platform: str
    source: str  # what decided the platform: ua, channel, referer, none
    visitor: str
    ip_hash: str
    bot: bool = False
    mobile: bool = False
    os: str = "other"
    channel: str | None = None
    #: One of OUTCOMES ('' in journals and exports written before outcomes were recorded).
    outcome: str = ""


class Event(NamedTuple):
    """Something that happened after a click: a storefront open, a WeCom entry, an add, the
    added contact's first chat, or the contact lost again."""

    id: str
    merchant_id: str
    product_id: int | None
    kind: EventKind
    platform: str
    ts: float
    day: str
    click_id: str | None = None
    #: For a storefront open: which storefront (platform id) the shopper was sent to.
    target: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """A merchant's single WeCom entry point. ``secrets`` never leave through the API."""

    merchant_id: str
    kind: EntryKind
    #: Public settings by kind: url (acquisition_link), users, chat_ids, qr_url.
    config: Mapping[str, Any]
    #: corp_id, secret, callback_token, encoding_aes_key (any may be absent).
    secrets: Mapping[str, str]
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class EntryWay:
    """A contact way or group join way WeCom made for one source platform, reused."""

    merchant_id: str
    platform: str
    config_id: str
    qr_code: str
    state: str
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Credentials:
    """A merchant's app on a platform (a WeChat mini-program's appid and secret)."""

    merchant_id: str
    platform: str
    app_id: str
    secret: str
    updated_at: float = 0.0


#: ``MintedLink.due_at`` of something that never needs renewing (a mini-program code).
NEVER = 1e18


@dataclass(frozen=True, slots=True)
class MintedLink:
    """Something minted through a platform API for one share link: a WeChat URL Link, an
    encrypted scheme, a mini-program code. ``value`` None: not minted (yet)."""

    merchant_id: str
    code: str
    kind: MintKind
    #: What it was minted for (the target's appid, path, query...): a changed target mints
    #: afresh, an unchanged one keeps what it has.
    fingerprint: str
    #: The link (URL Link, scheme); for a mini-program code, a token naming this image.
    value: str | None = None
    #: The mini-program code's image bytes (PNG or JPEG, as WeChat sent them).
    image: bytes | None = None
    #: When the platform stops honouring it (Unix time; 0: never).
    expires_at: float = 0.0
    minted_at: float = 0.0
    #: Failed attempts in a row since the last success (the backoff grows with it).
    attempts: int = 0
    #: When the renewer looks at it next: before it expires, or when a failure's backoff ends.
    due_at: float = 0.0
    #: Why the last attempt failed (an errcode and message), for the merchant and the logs.
    error: str | None = None


@dataclass(frozen=True, slots=True)
class InboxItem:
    """A verified, decrypted WeCom callback awaiting its work."""

    id: int
    merchant_id: str
    message: str
    received_at: float


@dataclass(frozen=True, slots=True)
class User:
    """A staff login for the dashboard. ``email`` is stored lower-cased and is the key.

    ``password_hash`` is self-describing (KDF, parameters, salt, hash; see gateway/users.py).
    ``locked_until``: no login succeeds before this moment (0: not locked).
    ``sessions_after``: sessions issued at or before this moment are void (set by logout).
    """

    email: str
    merchant_id: str
    role: StaffRole
    password_hash: str
    created_at: float = 0.0
    failed_logins: int = 0
    locked_until: float = 0.0
    last_login_at: float | None = None
    sessions_after: float = 0.0

    def locked(self, now: float) -> bool:
        return self.locked_until > now


@dataclass(frozen=True, slots=True)
class Contact:
    """A WeCom external contact added through the entry point, and where the add came from:
    its first chat and its loss count under the same platform, product and click."""

    merchant_id: str
    user_id: str
    external_userid: str
    platform: str
    product_id: int | None = None
    click_id: str | None = None
    added_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Alert:
    """Something the merchant must act on, e.g. the acquisition link out of quota."""

    id: int
    merchant_id: str
    kind: str
    detail: Mapping[str, Any]
    created_at: float


@dataclass(slots=True)
class StatsRow:
    key: dict[str, Any]
    clicks: int = 0
    unique_visitors: int = 0
    #: Half the 95% confidence interval of ``unique_visitors`` (0: the count is exact).
    unique_visitors_error: int = 0
    bot_clicks: int = 0
    redirects: int = 0
    landings: int = 0
    guides: int = 0
    storefront_opens: int = 0
    entries: int = 0
    adds: int = 0
    chats: int = 0
    lost_contacts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, key: dict[str, Any], counts: Sequence[Any]) -> StatsRow:
        """A row from its key and the counter sums in ``COUNTERS`` order (NULL counts as 0)."""
        row = cls(key)
        for name, count in zip(COUNTERS, counts, strict=True):
            setattr(row, name, int(count or 0))
        return row

    def as_json(self) -> dict[str, Any]:
        row = dict(self.key)
        for name in METRICS:
            row[name] = getattr(self, name)
        row["unique_visitors_error"] = self.unique_visitors_error
        row.update(self.extra)
        return row


class Store(abc.ABC):
    """One storage engine. Opened with migrations applied; every call is async."""

    #: Seals the merchants' secrets before they are stored and opens them when read
    #: (gateway/secretbox.py): the tables hold no plain secret.
    secrets: SecretBox

    # --- lifecycle ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""

    # --- merchants ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_merchant(self, merchant: Merchant) -> Merchant: ...

    @abc.abstractmethod
    async def get_merchant(self, merchant_id: str) -> Merchant | None: ...

    @abc.abstractmethod
    async def list_merchants(self) -> Sequence[Merchant]:
        """Every merchant, by id (an operator's view: ``linkloop merchant list``)."""

    @abc.abstractmethod
    async def update_merchant(self, merchant_id: str, *, name: str | None = None,
                              domains: Sequence[str] | None = None) -> Merchant | None:
        """Change a merchant's name or allowed web domains; None if there is no such one."""

    # --- products and their links -------------------------------------------------------------
    @abc.abstractmethod
    async def create_product(
        self, merchant_id: str, *, code: str, title: str,
        targets: Mapping[str, Mapping[str, str]], image_url: str | None, price: str | None,
        valid_from: float | None = None, valid_until: float | None = None,
    ) -> Product:
        """Raises CodeTaken when ``code`` is in use."""

    @abc.abstractmethod
    async def create_products(self, merchant_id: str,
                              products: Sequence[NewProduct]) -> list[Product]:
        """Create them all in one transaction, or none: CodeTaken (naming the code) when one
        code is in use, and nothing is written (a bulk import is all-or-nothing)."""

    @abc.abstractmethod
    async def get_product(self, merchant_id: str, product_id: int) -> Product | None: ...

    @abc.abstractmethod
    async def list_products(
        self, merchant_id: str, *, limit: int, after_id: int = 0, search: str | None = None,
        state: ProductState | None = None, now: float = 0.0,
    ) -> Sequence[Product]:
        """Products by ascending id after ``after_id`` (keyset pagination).

        ``search``: only those whose title or share code contains it (case-insensitive for
        ASCII letters). ``state``: only those in that state at ``now`` (see Product.state).
        """

    @abc.abstractmethod
    async def update_product(
        self, merchant_id: str, product_id: int, changes: Mapping[str, Any],
    ) -> Product | None:
        """Apply ``changes`` (title, image_url, price, targets, status, valid_from,
        valid_until); None if not found."""

    # --- named channels -----------------------------------------------------------------------
    @abc.abstractmethod
    async def create_channel(self, channel: Channel) -> Channel:
        """Raises ChannelExists when the merchant already has a channel of that name."""

    @abc.abstractmethod
    async def list_channels(self, merchant_id: str) -> Sequence[Channel]:
        """The merchant's channels, by name."""

    @abc.abstractmethod
    async def delete_channel(self, merchant_id: str, name: str) -> bool:
        """Forget a channel (its clicks keep their tag); False if there was none."""

    @abc.abstractmethod
    async def link(self, code: str) -> Product | None:
        """The product behind a share code, active or retired; the hot path's only read."""

    @abc.abstractmethod
    async def links(self, codes: Sequence[str]) -> dict[str, Product]:
        """The products behind many share codes (code -> product; unknown codes absent):
        the link cache re-reads all its stale entries in one go."""

    @abc.abstractmethod
    async def recent_links(self, limit: int) -> Sequence[Product]:
        """The most recently changed products (any merchant): to warm the link cache."""

    # --- moving a merchant between engines (linkloop export / import) ------------------------
    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The newest migration applied."""

    @abc.abstractmethod
    async def export_clicks(self, merchant_id: str, *, after: str, limit: int,
                            ) -> Sequence[Click]:
        """The merchant's raw clicks with id > ``after``, by id (keyset pages)."""

    @abc.abstractmethod
    async def export_events(self, merchant_id: str, *, after: str, limit: int,
                            ) -> Sequence[Event]:
        """The merchant's raw events with id > ``after``, by id (keyset pages)."""

    @abc.abstractmethod
    async def list_entry_ways(self, merchant_id: str) -> Sequence[EntryWay]: ...

    async def watch_links(self, forget: Callable[[str | None], None]) -> None:
        """Until cancelled, call ``forget(code)`` when another process changes a link, and
        ``forget(None)`` when changes may have been missed (a listener reconnecting).

        An engine with no way to hear other processes returns at once: the link cache's
        TTL is then the only bound on staleness.
        """
        return None

    # --- clicks, events and their rollups ---------------------------------------------------
    @abc.abstractmethod
    async def record(self, clicks: Sequence[Click], events: Sequence[Event]) -> None:
        """Store raw rows and what they add to every rollup table (per day, per month, daily
        totals: see rollup.py) and to the visitor sketches in one transaction, set aside
        to be folded in bulk (pending.py): reports agree whichever table answers them, and
        count what is set aside as the fold will.

        Idempotent: a click or event whose id is already stored is skipped and counts once,
        so a batch replayed from the journal after an unclear failure never double-counts.
        """

    @abc.abstractmethod
    async def click_origin(self, merchant_id: str, click_id: str) -> tuple[int, str] | None:
        """(product id, platform) of one of the merchant's clicks: joins an add to its click."""

    # --- platform app credentials -------------------------------------------------------------
    @abc.abstractmethod
    async def put_credentials(self, credentials: Credentials) -> Credentials: ...

    @abc.abstractmethod
    async def get_credentials(self, merchant_id: str, platform: str) -> Credentials | None: ...

    @abc.abstractmethod
    async def list_credentials(self, merchant_id: str) -> Sequence[Credentials]: ...

    # --- links minted through platform APIs (WeChat URL Links, schemes, codes) ----------------
    @abc.abstractmethod
    async def put_minted(self, minted: MintedLink) -> None:
        """Store (replace) one minted thing; every gateway hears that its share code changed."""

    @abc.abstractmethod
    async def minted(self, merchant_id: str, code: str) -> Sequence[MintedLink]:
        """Everything minted for one of the merchant's share codes (images included)."""

    @abc.abstractmethod
    async def minted_values(self, codes: Sequence[str], now: float,
                            ) -> dict[str, dict[str, str]]:
        """code -> {kind: value} of what is minted and unexpired at ``now``, for share codes
        (unscoped, like ``links``: the link cache reads it with the products)."""

    @abc.abstractmethod
    async def minted_image(self, code: str) -> tuple[str, bytes] | None:
        """A share code's mini-program code: (its token, the image bytes), or None."""

    @abc.abstractmethod
    async def claim_due_mints(self, now: float, lease_until: float, limit: int,
                              ) -> Sequence[MintedLink]:
        """Up to ``limit`` rows due at ``now`` (images left out), each claimed atomically by
        moving its ``due_at`` to ``lease_until``: gateways sharing a database never work the
        same row at once."""

    @abc.abstractmethod
    async def forget_minted(self, merchant_id: str, code: str) -> None:
        """Drop everything minted for a share code (its target is gone)."""

    # --- retention and privacy ---------------------------------------------------------------
    @abc.abstractmethod
    async def prune_raw(self, *, before_day: str, before_ts: float) -> dict[str, Any]:
        """Delete raw rows older than the retention (gateway/retention.py): clicks, events
        and daily visitor rows of days before ``before_day``, and WeCom callbacks worked
        before ``before_ts``. The rollups keep their counts. Returns how many rows of each
        went (and, on PostgreSQL, which whole month partitions were dropped)."""

    @abc.abstractmethod
    async def forget_visitor(self, visitor: str, merchant_id: str | None,
                             ) -> dict[str, dict[str, int]]:
        """Delete one visitor's raw rows: their clicks, the events that followed them and
        their daily visitor rows, for one merchant or (None) every merchant, and their hash
        from the visitor sketches of their clicks' cells (gateway/store/forget.py). Rollups
        keep their counts. Returns, per merchant touched, how many rows of each went
        (``clicks``, ``events``, ``visitors``) and how many sketch cells were
        ``sketches_cleaned`` (exact: the hash dropped), ``sketches_rebuilt`` (estimated:
        rebuilt from the raw clicks left) and ``sketches_left`` (estimated, raw clicks
        partly pruned)."""

    @abc.abstractmethod
    async def export_rollups(self, merchant_id: str, *, before_day: str,
                             ) -> tuple[list[tuple[RollupKey, tuple[int, ...]]],
                                        list[tuple[SketchKey, bytes]]]:
        """The figures of the merchant's days before ``before_day`` (their raw rows pruned,
        or about to be), for an export: the per-day rollup rows (key, counts in
        ``COUNTERS`` order) and the visitor sketches of cells that start before that day."""

    @abc.abstractmethod
    async def add_rollups(self, rows: Sequence[tuple[RollupKey, tuple[int, ...]]],
                          sketches: Sequence[tuple[SketchKey, bytes]] = ()) -> None:
        """Add per-day rollup rows to every counter table and merge visitor sketches into
        theirs (an import of days whose raw rows are gone), in one transaction, as
        recording their clicks would have."""

    # --- secrets at rest ---------------------------------------------------------------------
    @abc.abstractmethod
    async def reseal_secrets(self, *, only_plain: bool = False) -> dict[str, int]:
        """Seal every stored secret under the box's current key (``linkloop secrets
        rotate``), or with ``only_plain`` only those stored unsealed (done on open); how
        many of each table's rows were sealed again."""

    # --- the WeCom entry point ----------------------------------------------------------------
    @abc.abstractmethod
    async def put_entry(self, entry: Entry) -> Entry:
        """Set the merchant's entry; the ways made for the previous one are forgotten."""

    @abc.abstractmethod
    async def get_entry(self, merchant_id: str) -> Entry | None: ...

    @abc.abstractmethod
    async def get_entry_way(self, merchant_id: str, platform: str) -> EntryWay | None: ...

    @abc.abstractmethod
    async def put_entry_way(self, way: EntryWay) -> EntryWay:
        """Store a way; if one already exists for the platform, keep and return that one."""

    @abc.abstractmethod
    async def accept_callback(self, merchant_id: str, nonce: str, message: str) -> bool:
        """Keep a verified callback for processing; False when its nonce was seen (replay)."""

    @abc.abstractmethod
    async def pending_callbacks(self, limit: int) -> Sequence[InboxItem]: ...

    @abc.abstractmethod
    async def finish_callback(self, item_id: int) -> None: ...

    @abc.abstractmethod
    async def add_group_member(self, merchant_id: str, chat_id: str, member: str) -> bool:
        """Note a member of a group; True the first time (their join counts once)."""

    @abc.abstractmethod
    async def put_contact(self, contact: Contact) -> Contact:
        """Note where an added contact came from; the first add of a contact is kept."""

    @abc.abstractmethod
    async def get_contact(self, merchant_id: str, user_id: str,
                          external_userid: str) -> Contact | None: ...

    # --- alerts -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def add_alert(self, merchant_id: str, kind: str, detail: Mapping[str, Any], *,
                        key: str, created_at: float) -> bool:
        """Keep an alert; False when one with this ``key`` is already kept (a retry)."""

    @abc.abstractmethod
    async def list_alerts(self, merchant_id: str, *, since: float, limit: int,
                          ) -> Sequence[Alert]:
        """The merchant's alerts made at or after ``since``, newest first."""

    @abc.abstractmethod
    async def stats(
        self, merchant_id: str, *, from_day: str, to_day: str, by: GroupBy,
        product_id: int | None = None, platform: str | None = None,
        channel: str | None = None,
    ) -> list[StatsRow]:
        """Rollup sums for one merchant, grouped by platform, product, day or channel, or
        one ``total`` row (key ``{}``); counters summed, unique visitors distinct over the
        whole range and group (merged sketches, see sketch.py).

        ``channel`` keeps only visits tagged with that ``?ch=`` channel (and the storefront
        opens, entries and adds that followed them); '' is "no channel".
        """

    # --- staff logins for the dashboard -------------------------------------------------------
    # ``get_user`` is unscoped on purpose, like ``link``: a login names only an email. Every
    # read after it is scoped by the user's own merchant.
    @abc.abstractmethod
    async def create_user(self, user: User) -> User:
        """Raises UserExists when the email is taken, StoreError when the merchant is unknown."""

    @abc.abstractmethod
    async def get_user(self, email: str) -> User | None: ...

    @abc.abstractmethod
    async def list_users(self, merchant_id: str) -> Sequence[User]:
        """The merchant's staff logins, by email (for ``linkloop export``)."""

    @abc.abstractmethod
    async def record_login_failure(
        self, email: str, *, now: float, max_failures: int, lock_seconds: float,
    ) -> User | None:
        """Count a wrong password, atomically; the ``max_failures``-th in a row locks the
        login until ``now + lock_seconds`` (and starts the count again). None if no such user.
        """

    @abc.abstractmethod
    async def record_login_success(self, email: str, *, now: float) -> None:
        """A login succeeded: the failure count starts again and ``last_login_at`` is now."""

    @abc.abstractmethod
    async def end_sessions(self, email: str, *, now: float) -> None:
        """Void every session of this user issued up to ``now`` (logout)."""

    @abc.abstractmethod
    async def set_password(self, email: str, password_hash: str, *, now: float) -> User | None:
        """A new password for a login (an operator's reset): its lock is lifted and every
        session issued up to ``now`` is void. The user as it was before, or None."""

    @abc.abstractmethod
    async def unlock_user(self, email: str) -> User | None:
        """Lift a login's lock and start its failure count again (an admin's chore).
        The user as it was before, or None if no such user."""

    @abc.abstractmethod
    async def take_login_attempt(
        self, address: str, *, now: float, window_seconds: float, max_attempts: int,
    ) -> float:
        """Count a login attempt from a client address (its hash), atomically.

        0.0 when the attempt may go ahead: it is one of the first ``max_attempts`` since
        the address's window opened (a window opens at its first attempt and lasts
        ``window_seconds``). Otherwise the seconds until the window closes, and the attempt
        is not counted. Forgets windows that have closed.
        """

    @abc.abstractmethod
    async def give_back_login_attempt(self, address: str) -> None:
        """An attempt taken from this address succeeded: it no longer counts against it."""
