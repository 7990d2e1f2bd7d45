"""Locust load test of the IACE calls API: the same mix as `iace bench api`.

Each simulated user logs in once (POST /api/v1/auth/login), discovers call ids of its
organization through the list endpoint, then loops: 40% first page of the calls list, 10% a
filtered first page, 10% the next page through the cursor of its last page, 40% the detail of a
known call (with events and transcript).

Environment:
    IACE_HOST         base URL of the engine (default http://127.0.0.1:8080); `--host` wins
    IACE_EMAIL        a viewer (or higher) account; several users may share it
    IACE_PASSWORD     its password
    IACE_CREDENTIALS  instead of the two above: "email:password,email:password,...", spread
                      over users round-robin (one account per organization covers several orgs)
    IACE_DISCOVERY_PAGES  list pages read at start to collect call ids (default 4)
    IACE_THINK_MS     mean pause between requests in ms, exponential (default 0: none)

Login is rate limited per client address (auth.login_per_ip, 30 a minute by default) and per
account: start users gradually (`--spawn-rate`) or raise the limits on a test engine.

    locust -f locustfile.py --headless -u 500 -r 20 -t 2m --host http://127.0.0.1:8080
"""

import itertools
import os
import random
import threading
from datetime import datetime, timedelta, timezone

from locust import HttpUser, task

HOST = os.environ.get("IACE_HOST", "http://127.0.0.1:8080")
DISCOVERY_PAGES = int(os.environ.get("IACE_DISCOVERY_PAGES", "4"))
THINK_MS = float(os.environ.get("IACE_THINK_MS", "0"))


def _credentials():
    raw = os.environ.get("IACE_CREDENTIALS", "")
    pairs = [p.split(":", 1) for p in raw.split(",") if ":" in p]
    if not pairs:
        pairs = [[os.environ.get("IACE_EMAIL", ""), os.environ.get("IACE_PASSWORD", "")]]
    return [(email, password) for email, password in pairs]


_CREDENTIALS = _credentials()
_NEXT_ACCOUNT = itertools.cycle(range(len(_CREDENTIALS)))
_LOCK = threading.Lock()

FILTERS = [
    "status=ended",
    "status=streaming",
    "direction=outbound",
    "outcome=escalated",
]


def _day_filter():
    day = datetime.now(timezone.utc) - timedelta(days=random.randint(1, 179))
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return f"from={day.strftime(fmt)}&to={(day + timedelta(days=1)).strftime(fmt)}"


class CallsApiUser(HttpUser):
    host = HOST

    def wait_time(self):
        if THINK_MS <= 0:
            return 0
        return random.expovariate(1000.0 / THINK_MS)

    def on_start(self):
        with _LOCK:
            email, password = _CREDENTIALS[next(_NEXT_ACCOUNT)]
        if not email:
            raise RuntimeError("set IACE_EMAIL and IACE_PASSWORD (or IACE_CREDENTIALS)")
        response = self.client.post(
            "/api/v1/auth/login",
            json={"email": email, "password": password},
            name="/api/v1/auth/login",
        )
        response.raise_for_status()
        token = response.json()["access_token"]
        self.client.headers["Authorization"] = f"Bearer {token}"
        self.call_ids = []
        self.continuation = None  # (filter, cursor) of the last list page
        cursor = None
        for _ in range(DISCOVERY_PAGES):
            path = "/api/v1/calls?limit=200" + (f"&cursor={cursor}" if cursor else "")
            page = self.client.get(path, name="discovery").json()
            self.call_ids.extend(call["id"] for call in page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                break

    def _list(self, query, name):
        path = "/api/v1/calls" + (f"?{query}" if query else "")
        with self.client.get(path, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
                return
            cursor = response.json().get("next_cursor")
            base = query.split("cursor=")[0].rstrip("&")
            self.continuation = (base, cursor) if cursor else None

    @task(40)
    def list_first_page(self):
        self._list("", "list")

    @task(10)
    def list_filtered(self):
        query = random.choice(FILTERS) if random.random() < 0.8 else _day_filter()
        self._list(query, "list_filtered")

    @task(10)
    def list_next_page(self):
        if not self.continuation:
            self._list("", "list")
            return
        base, cursor = self.continuation
        query = f"{base}&cursor={cursor}" if base else f"cursor={cursor}"
        self._list(query, "list_next")

    @task(40)
    def call_detail(self):
        if not self.call_ids:
            self._list("", "list")
            return
        call_id = random.choice(self.call_ids)
        self.client.get(f"/api/v1/calls/{call_id}", name="detail")
