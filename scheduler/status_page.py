"""The status page: a pure render of a ``Snapshot`` (plain data in, an HTML string out).

One server-rendered page, no JavaScript and no external assets, readable on a phone, reloading itself. The
snapshot's texts are shown as given, escaped: whoever builds it has already passed them through ``Daemon.redact``.
The page's style is the package file ``status_page.css``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from importlib import resources
from urllib.parse import quote, urlencode

from scheduler.config import Job
from scheduler.daemon import MANUAL
from scheduler.store import FAILED, PASSED, SKIPPED, Fire, Hold, Incident
from scheduler.supervision import LoopHealth
from scheduler.views import outcome_word

HISTORY = 20  # outcomes shown per job
PER_PAGE = 100  # jobs per page: what one request reads and draws, however many jobs the config holds
LIVENESS = timedelta(seconds=30)  # the timer turns at least every 5 s; six missed turns means it is stuck
_CSS = resources.files("scheduler").joinpath("status_page.css").read_text(encoding="utf-8")


@dataclass(frozen=True)
class JobRow:
    """One job's row: its config, next fire, pause and silence, newest fires first, open incidents."""

    job: Job
    next_fire: datetime | None
    holds: list[Hold]
    fires: list[Fire]
    incidents: list[Incident]


@dataclass(frozen=True)
class Paging:
    """Which page of which jobs is shown: those whose name holds ``q``, only the failing ones, page ``page``."""

    q: str = ""
    failing: bool = False
    page: int = 1  # from 1
    total: int = 0  # jobs that pass the filter
    jobs: int = 0  # jobs in the config
    per_page: int = PER_PAGE

    def query(self, page: int | None = None) -> dict[str, str]:
        """This view's URL query (the filter, and the page unless it is the first)."""
        number = self.page if page is None else page
        query = {"q": self.q} if self.q else {}
        query |= {"state": "failing"} if self.failing else {}
        return query | ({"page": str(number)} if number > 1 else {})

    def url(self, page: int | None = None) -> str:
        query = self.query(page)
        return f"/?{urlencode(query)}" if query else "/"

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def filtered(self) -> bool:
        return bool(self.q) or self.failing


@dataclass(frozen=True)
class Snapshot:
    """Everything the page shows, at ``now``."""

    now: datetime
    version: str
    owner: str
    started_at: datetime | None
    ticked_at: datetime | None
    config_path: str
    config_digest: str
    config_errors: list[str]
    loops: list[LoopHealth]
    jobs: list[JobRow]
    daemon_incidents: list[Incident]
    database_problem: str | None = None
    notice: str | None = None  # what the last button did, e.g. "nightly triggered (fire 12)"
    refresh: int = 10
    paging: Paging | None = None  # None: one page of every job in ``jobs``


def render(snapshot: Snapshot) -> str:
    """The whole status page."""
    paging = snapshot.paging or Paging(total=len(snapshot.jobs), jobs=len(snapshot.jobs))
    hidden = "".join(
        f'<input type="hidden" name="{key}" value="{escape(value)}">' for key, value in paging.query().items()
    )
    rows = [_row(row, snapshot.now, hidden) for row in snapshot.jobs]
    problem = snapshot.database_problem
    body = "".join(
        [
            _header(snapshot),
            _loops_banner(snapshot.loops, snapshot.now),
            _config_banner(snapshot),
            f'<div class="banner bad" role="alert"><b>Database unreachable.</b> {escape(problem)}</div>'
            if problem is not None
            else "",
            _daemon_incidents(snapshot.daemon_incidents),
            f'<div class="banner note" role="status">{escape(snapshot.notice)}.</div>' if snapshot.notice else "",
            _filter_form(paging),
            _pager(paging, len(rows)),
            '<div class="wrap"><table id="jobs"><thead><tr><th>Job</th><th>Schedule</th><th>Next fire</th>'
            f"<th>Last {HISTORY} (oldest to newest)</th><th>Open incident</th><th>Actions</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>",
            "" if rows else f"<p>{_nothing(paging)}</p>",
            _pager(paging, len(rows)) if len(rows) > 20 else "",
            f"<footer>Refreshes every {snapshot.refresh}s. JSON: <a href=/api/jobs>/api/jobs</a> · "
            "<a href=/metrics>/metrics</a> · <a href=/readyz>/readyz</a></footer>",
        ]
    )
    return page("cekura-scheduler", body, refresh=snapshot.refresh, again=paging.url())


def _filter_form(paging: Paging) -> str:
    """Find jobs by a part of their name, or show the failing ones only (a plain GET form, no JavaScript)."""
    if paging.jobs <= paging.per_page and not paging.filtered:
        return ""
    checked = " checked" if paging.failing else ""
    clear = ' <a href="/">show every job</a>' if paging.filtered else ""
    return (
        '<form method="get" action="/" class="filter" role="search">'
        f'<input type="search" name="q" value="{escape(paging.q)}" placeholder="job name contains" '
        'aria-label="job name contains"> '
        f'<label><input type="checkbox" name="state" value="failing"{checked}> failing only</label> '
        f'<button type="submit">Filter</button>{clear}</form>'
    )


def _pager(paging: Paging, shown: int) -> str:
    """Where this page is among the jobs ("jobs 101-200 of 1,000"), and links to the pages before and after."""
    if paging.total <= paging.per_page and not paging.filtered:
        return ""
    first = (paging.page - 1) * paging.per_page
    where = f"jobs {first + 1:,}-{first + shown:,} of {paging.total:,}" if shown else f"page {paging.page:,}: no jobs"
    how = [*(["failing"] if paging.failing else []), *([f"name holds “{paging.q}”"] if paging.q else [])]
    count = f"{where} ({', '.join(how)}; {paging.jobs:,} in all)" if how else where
    links = []
    if paging.page > 1:
        back = min(paging.page - 1, paging.pages)
        links.append(f'<a href="{escape(paging.url(back))}" rel="prev">previous page</a>')
    if paging.page < paging.pages:
        links.append(f'<a href="{escape(paging.url(paging.page + 1))}" rel="next">next page</a>')
    return f'<nav class="pager" aria-label="pages"><span>{escape(count)}</span> {" · ".join(links)}</nav>'


def _nothing(paging: Paging) -> str:
    if paging.total and paging.page > paging.pages:
        return f'No jobs on this page: <a href="{escape(paging.url(1))}">the first page</a>.'
    if paging.filtered:
        return 'No job matches. <a href="/">Show every job</a>.'
    return "No jobs in the config."


def render_sign_in(problem: str = "") -> str:
    """The sign-in form of a server with a token, with what went wrong last."""
    banner = f'<p class="banner bad" role="alert">{escape(problem)}</p>' if problem else ""
    body = (
        f"{banner}<p>This scheduler needs its token (<code>SCHEDULER_HTTP_TOKEN</code>).</p>"
        '<form method="post" action="/login" class="login">'
        '<input type="password" name="token" autocomplete="current-password" aria-label="token" required>'
        ' <button type="submit">Sign in</button></form>'
    )
    return page("cekura-scheduler: sign in", body)


def page(title: str, body: str, *, refresh: int | None = None, again: str = "/") -> str:
    """A complete HTML document; ``refresh`` seconds makes it reload itself (as ``again``: the same page)."""
    meta = f'<meta http-equiv="refresh" content="{refresh}; url={escape(again)}">' if refresh else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{escape(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>"
    )


def _relative(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    size = abs(seconds)
    if size < 90:
        text = f"{size}s"
    elif size < 5400:
        text = f"{round(size / 60)} min"
    elif size < 172800:
        text = f"{round(size / 3600)} h"
    else:
        text = f"{round(size / 86400)} days"
    return f"in {text}" if seconds >= 0 else f"{text} ago"


def _local(instant: datetime, job: Job | None) -> str:
    zone = job.timezone if job is not None else UTC
    return f"{instant.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}"


def _header(snapshot: Snapshot) -> str:
    now, tick = snapshot.now, snapshot.ticked_at
    state = (
        f'<span class="pill ok">running</span> timer turned {max(0, int((now - tick).total_seconds()))}s ago'
        if tick is not None and now - tick <= LIVENESS
        else '<span class="pill bad">not running</span>'
    )
    started = f" · started {escape(_local(snapshot.started_at, None))}" if snapshot.started_at else ""
    return (
        f"<header><h1>cekura-scheduler</h1><span class=meta>{state}{started} · "
        f"config <code>{escape(snapshot.config_path)}</code> {escape(snapshot.config_digest)} · "
        f"v{escape(snapshot.version)} · {escape(snapshot.owner)}</span></header>"
    )


def _loops_banner(loops: list[LoopHealth], now: datetime) -> str:
    """The background loops that are down or stale, with their last error."""
    items = []
    for loop in loops:
        if loop.ok(now):
            continue
        if loop.down:
            state = f"down, restarting ({loop.failures} failure{'s' if loop.failures != 1 else ''} in a row)"
        elif loop.last_tick is not None:
            state = f"stale: last turned {_relative(loop.last_tick - now)}"
        else:
            state = "stale: has not turned since it started"
        error = f": <code>{escape(loop.last_error)}</code>" if loop.last_error else ""
        items.append(f"<li><b>{escape(loop.name)}</b> {escape(state)}{error}</li>")
    if not items:
        return ""
    return (
        '<div class="banner bad" id="loops-down" role="alert"><b>Background tasks not running:</b>'
        f"<ul>{''.join(items)}</ul></div>"
    )


def _config_banner(snapshot: Snapshot) -> str:
    issues = snapshot.config_errors
    if not issues:
        return ""
    items = "".join(f"<li><code>{escape(issue)}</code></li>" for issue in issues)
    return (
        '<div class="banner bad" id="config-invalid" role="alert"><b>CONFIG INVALID:</b> '
        f"{escape(snapshot.config_path)} has {len(issues)} error{'s' if len(issues) != 1 else ''}; "
        f"the daemon keeps running the previous version ({escape(snapshot.config_digest)}) until it is fixed."
        f"<ul>{items}</ul></div>"
    )


def _daemon_incidents(incidents: list[Incident]) -> str:
    if not incidents:
        return ""
    return f'<div class="banner bad" role="alert"><b>Open incidents of the daemon</b>{_incidents(incidents)}</div>'


def _hold(hold: Hold, job: Job) -> str:
    """A pause or silence in words (paused by X until Y: reason), and since when on hover."""
    pause = hold.kind == "pause"
    open_ended = "resumed" if pause else "further notice"
    until = _local(hold.until, job) if hold.until is not None else open_ended
    words = f"{'paused' if pause else 'alerts silenced'} by {hold.created_by} until {until}"
    words += f": {hold.reason}" if hold.reason else ""
    tip = f"since {_local(hold.starts_at, job)}"
    return f'<div class="hold" data-hold="{escape(hold.kind)}" title="{escape(tip)}">{escape(words)}</div>'


def _row(row: JobRow, now: datetime, hidden: str) -> str:
    job = row.job
    name = escape(job.name)
    path = f"/api/jobs/{quote(job.name, safe='')}"
    badges = "" if job.enabled else ' <span class="pill off">disabled</span>'
    badges += "".join(_hold(hold, job) for hold in row.holds)
    upcoming = row.next_fire
    next_fire = (
        f'<span class="nowrap" title="{upcoming:%Y-%m-%d %H:%M:%S} UTC">{escape(_local(upcoming, job))}</span>'
        f"<br><small>{escape(_relative(upcoming - now))}</small>"
        if upcoming is not None
        else "—"
    )
    marks = "".join(_mark(fire, row) for fire in reversed(row.fires)) or '<span class="none">no fires yet</span>'
    # Each form carries the page and filter (``hidden``): the answer comes back to the same view.
    toggle = (
        f'<form method="post" action="{path}/resume">{hidden}<button data-action="resume">Resume</button></form>'
        if any(hold.kind == "pause" for hold in row.holds)
        else f'<form method="post" action="{path}/pause">{hidden}<button data-action="pause">Pause</button></form>'
    )
    actions = (
        f'<form method="post" action="{path}/trigger">{hidden}<button data-action="trigger" class="primary">'
        f"Run now</button></form>{toggle}"
    )
    return (
        f'<tr data-job="{name}"><td data-label="Job"><b class="nowrap">{name}</b>{badges}</td>'
        f'<td data-label="Schedule">{escape(job.schedule.in_words())}</td>'
        f'<td data-label="Next fire">{next_fire}</td>'
        f'<td data-label="Last {HISTORY}"><div class="marks">{marks}</div></td>'
        f'<td data-label="Open incident">{_incidents(row.incidents) or "—"}</td>'
        f'<td data-label="Actions"><div class="actions">{actions}</div></td></tr>'
    )


def _mark(fire: Fire, row: JobRow) -> str:
    if fire.outcome == PASSED:
        kind, symbol = "passed", "✓"
    elif fire.outcome == FAILED:
        kind, symbol = "failed", "✗"
    elif fire.state == SKIPPED:
        kind, symbol = "skipped", "-"
    else:
        kind, symbol = "running", "…"
    parts = [_local(fire.slot, row.job), outcome_word(fire)]
    parts.append(f"result {fire.result_id}" if fire.result_id is not None else "no result")
    if fire.trigger == MANUAL:
        parts.append("run by hand")
    if fire.error:
        parts.append(fire.error[:200])
    tip = escape(" · ".join(parts))
    return (
        f'<a class="m {kind}" href="/api/fires/{fire.id}" data-fire="{fire.id}" title="{tip}" '
        f'aria-label="{tip}">{symbol}</a>'
    )


def _incidents(incidents: list[Incident]) -> str:
    """Open incidents, one line each (one per channel is one line), their detail on hover."""
    seen: dict[tuple[str, str], str] = {}
    for incident in incidents:
        # A daemon's incident is named by its subject ("database unreachable"); a job's by its detail.
        named = incident.subject if incident.scope != "job" else None
        what = (named or incident.detail).strip() or "open"
        since = incident.failing_since or incident.opened_at
        when = f"{since:%Y-%m-%d %H:%M} UTC"
        first = what.splitlines()[0][:120]
        seen.setdefault(
            (first, when),
            f'<div class="incident" title="{escape((incident.detail or what)[:1000])}"><span class="pill bad">'
            f"incident</span> {escape(first)}<br><small>since {escape(when)}</small></div>",
        )
    return "".join(seen.values())


__all__ = ["HISTORY", "LIVENESS", "PER_PAGE", "JobRow", "Paging", "Snapshot", "page", "render", "render_sign_in"]
