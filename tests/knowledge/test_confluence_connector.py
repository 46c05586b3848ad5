"""The confluence kind against a fake Confluence site on 127.0.0.1 speaking Atlassian's wire format (Cloud REST
API v2 + the v1 CQL search; Server / Data Center REST API v1), synced into a real index and searched: pages and
PDF attachments with their citations, re-syncs that download nothing, an edit re-fetched alone, trashed,
archived and deleted content removed, read restrictions (inherited from an ancestor) kept out of public
channels, 429 + Retry-After waited, wrong credentials failing the run without touching the index or showing
the token."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from knowledge.config import KnowledgeConfig
from knowledge.connectors import confluence
from knowledge.connectors.config import SourcesConfigError, parse_sources
from knowledge.connectors.sync import sync_source
from knowledge.index import IndexStore
from knowledge.retrieval import Retriever, SearchFilter
from tests.fakes.confluence_api import FakeConfluence, start_fake_confluence
from tests.knowledge.test_formats import pdf_bytes

TOKEN = "atl-token-123"
ENV = {"CONFLUENCE_TOKEN": TOKEN}

LEAVE = """<h2>Who is eligible</h2><p>Every employee after six months of service.</p>
<h2>How long</h2><ac:structured-macro ac:name="info" ac:schema-version="1"><ac:rich-text-body>
<p>Parental leave lasts <strong>sixteen weeks</strong> on full pay.</p></ac:rich-text-body></ac:structured-macro>
<table><tbody><tr><th>Country</th><th>Weeks</th></tr><tr><td>France</td><td>16</td></tr></tbody></table>
<ac:structured-macro ac:name="toc" ac:schema-version="1"/>"""
VPN = """<p>The company VPN client is called NorthGate.</p><h2>Connecting</h2>
<p>Open NorthGate and sign in with your badge number.</p>
<ac:structured-macro ac:name="code" ac:schema-version="1"><ac:parameter ac:name="language">bash</ac:parameter>
<ac:plain-text-body><![CDATA[northgate connect --gateway eu-west]]></ac:plain-text-body></ac:structured-macro>
<p>See <ac:link><ri:page ri:content-title="Laptops" /><ac:plain-text-link-body><![CDATA[the laptop policy]]>
</ac:plain-text-link-body></ac:link>.</p>
<ac:structured-macro ac:name="jira" ac:schema-version="1"><ac:parameter ac:name="key">IT-42</ac:parameter>
</ac:structured-macro>"""


@pytest.fixture
def cloud() -> Iterator[FakeConfluence]:
    with start_fake_confluence("cloud") as site:
        yield site


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    return IndexStore(KnowledgeConfig(index_dir=tmp_path / "data" / "index", chroma_dir=tmp_path / "data" / "chroma"))


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the connector asked for (Retry-After), recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(confluence, "sleep", waits.append)
    return waits


def cloud_source(site: FakeConfluence, **extra: object) -> confluence.ConfluenceSource:
    (source,) = parse_sources([{"name": "wiki", "kind": "confluence", "base_url": site.base_url,
                                "email": site.email, "token_env": "CONFLUENCE_TOKEN", "spaces": ["HR", "IT"],
                                "page_size": 2, **extra}])
    assert isinstance(source, confluence.ConfluenceSource)
    return source


def public_search(store: IndexStore, query: str) -> list[str]:
    return [p.doc_id for p in Retriever(store).search(query, kb="t", k=10,
                                                      search_filter=SearchFilter(public_only=True))]


def test_cloud_spaces_sync_incrementally_with_restrictions_attachments_and_deletions(
        cloud: FakeConfluence, store: IndexStore, tmp_path: Path, sleeps: list[float]) -> None:
    cloud.add_space("HR", "Human Resources")
    cloud.add_space("IT", "IT Help")
    cloud.add_space("SALES", "Sales")  # not selected
    leave = cloud.add_page("HR", "Parental leave", LEAVE)
    pay = cloud.add_page("HR", "Pay", "<p>Salaries are paid on the 25th of every month by transfer.</p>")
    pay.read_groups = ["hr-team"]
    bands = cloud.add_page("HR", "Salary bands", "<h2>Grade 7</h2><p>Grade seven earns between 61k and 68k euros.</p>",
                           parent=pay)
    vpn = cloud.add_page("IT", "VPN setup", VPN)
    twin = cloud.add_page("HR", "VPN setup", "<p>HR staff connect through the HR jump host every morning.</p>")
    old = cloud.add_page("IT", "Old dial-up", "<p>Dial the modem pool at 555-0100 to connect.</p>")
    old.status = "archived"
    cloud.add_page("SALES", "Pricing", "<p>The list price of the product is confidential.</p>")
    guide = cloud.attach(vpn, "NorthGate guide.pdf", "application/pdf",
                         pdf_bytes(["NorthGate installation guide", "Install the client from the software centre."]))
    form = cloud.attach(vpn, "Access form.pdf", "application/pdf",
                        pdf_bytes(["VPN access form", "Ask your manager to sign the access request."]))
    cloud.attach(vpn, "screenshot.png", "image/png", b"\x89PNG\r\n\x1a\n")
    configs = cloud.attach(vpn, "configs.zip", "application/zip", b"PK\x03\x04")
    cloud.throttle("/wiki/api/v2/spaces/", times=1, retry_after="7")
    source = cloud_source(cloud)
    work = tmp_path / "work"

    first = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
    assert first.status == "ok", first.errors
    ids = {"leave": f"wiki/hr/parental-leave-{leave.id}", "pay": f"wiki/hr/pay-{pay.id}",
           "bands": f"wiki/hr/salary-bands-{bands.id}", "vpn": f"wiki/it/vpn-setup-{vpn.id}",
           "twin": f"wiki/hr/vpn-setup-{twin.id}",
           "guide": f"wiki/it/vpn-setup-{vpn.id}/northgate-guide-{guide.id}",
           "form": f"wiki/it/vpn-setup-{vpn.id}/access-form-{form.id}"}
    assert sorted(first.added) == sorted(ids.values())
    assert [(s.path, s.reason) for s in first.skipped] == [
        (f"wiki/it/vpn-setup-{vpn.id}/configs-{configs.id}.bin",
         "unsupported attachment type 'application/zip'")]
    assert sleeps == [7.0], "the 429's Retry-After was waited once"
    assert len(cloud.served(r"^/wiki/api/v2/pages/\d+$")) == 5, "one body per page"
    assert all(r.query.get("body-format") == "storage" for r in cloud.served(r"^/wiki/api/v2/pages/\d+$"))
    assert len(cloud.served(r"^/wiki/api/v2/spaces/\d+/pages$")) == 4, "HR: 2 calls, IT: 1, the 429: 1"
    assert len(cloud.served(r"^/wiki/rest/api/content/search$")) == 5, "9 results, 2 per call"

    retriever = Retriever(store)
    top = retriever.search("sign in NorthGate badge number", kb="t", k=1)[0]
    assert (top.doc_id, top.title, top.knowledge_set) == (ids["vpn"], "VPN setup", "it")
    assert top.location == f"{cloud.root}/wiki/spaces/IT/pages/{vpn.id}/VPN+setup"
    assert top.heading == "Connecting"
    code = retriever.search("northgate connect gateway eu-west", kb="t", k=1)[0]
    assert "northgate connect --gateway eu-west" in code.text
    pdf = retriever.search("installation guide software centre", kb="t", k=1)[0]
    assert (pdf.doc_id, pdf.location) == (ids["guide"], top.location), "an attachment cites its page"
    weeks = retriever.search("how long is parental leave", kb="t", k=1)[0]
    assert weeks.doc_id == ids["leave"] and "sixteen weeks" in weeks.text
    assert retriever.search("HR jump host", kb="t", k=1)[0].doc_id == ids["twin"]

    hidden = public_search(store, "salary grade seven earns paid on the 25th")
    assert ids["pay"] not in hidden and ids["bands"] not in hidden, "restricted, and inherited by its child"
    restricted = [p.doc_id for p in retriever.search("grade seven earns between", kb="t", k=3)]
    assert ids["bands"] in restricted, "a restricted channel sees it"
    assert ids["vpn"] in public_search(store, "NorthGate badge number")
    assert not any("dial-up" in d or "pricing" in d for d in first.added), "archived, and not a chosen space"

    cloud.requests.clear()
    again = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
    assert again.status == "unchanged" and again.index_version == first.index_version
    assert cloud.served(r"^/wiki/api/v2/pages/") == [] and cloud.served("/download/") == [], "listing only"

    cloud.edit(vpn, body=VPN.replace("your badge number", "your new smart card"))
    cloud.requests.clear()
    edited = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
    assert edited.updated == [ids["vpn"]] and edited.added == edited.deleted == []
    assert [r.path for r in cloud.served(r"^/wiki/api/v2/pages/")] == [f"/wiki/api/v2/pages/{vpn.id}"]
    assert cloud.served("/download/") == []
    assert "smart card" in retriever.search("sign in with your new smart card", kb="t", k=1)[0].text

    twin.status = "trashed"
    cloud.attachments.pop(form.id)
    leave.status = "archived"
    vpn.read_users = ["557058:it-admin"]  # restricted later, its version unchanged
    bonus = cloud.add_page("HR", "Bonus", "<p>The yearly bonus pool is four percent of payroll.</p>")
    bonus.read_groups = ["execs"]
    cloud.search_lag.add(bonus.id)  # too new for the search index: its restrictions are read on their own
    canteen = cloud.add_page("HR", "Canteen", "<p>The canteen serves lunch from noon until two.</p>")
    cloud.search_lag.add(canteen.id)
    cloud.requests.clear()
    removed = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
    assert sorted(removed.deleted) == sorted([ids["twin"], ids["form"], ids["leave"]])
    assert sorted(removed.updated) == sorted([ids["vpn"], ids["guide"]]), (
        "the new restriction re-marks the page and its attachment")
    assert sorted(removed.added) == sorted([f"wiki/hr/bonus-{bonus.id}", f"wiki/hr/canteen-{canteen.id}"])
    assert sorted(r.path for r in cloud.served("/restriction/")) == sorted(
        f"/wiki/rest/api/content/{p.id}/restriction/byOperation/read" for p in (bonus, canteen))
    assert public_search(store, "yearly bonus pool payroll") == [f"wiki/hr/canteen-{canteen.id}"], (
        "restricted although the search lags; the public page stays public")
    assert ids["vpn"] not in public_search(store, "sign in with your new smart card")
    assert ids["guide"] not in public_search(store, "installation guide software centre"), "its page's restriction"
    assert retriever.search("sign in with your new smart card", kb="t", k=1)[0].doc_id == ids["vpn"]


def test_server_data_center_lists_with_ancestors_and_pages_by_start(store: IndexStore, tmp_path: Path,
                                                                    sleeps: list[float]) -> None:
    with start_fake_confluence("server") as site:
        site.add_space("OPS", "Operations")
        runbooks = site.add_page("OPS", "Runbooks", "<p>Every runbook of the operations team lives here.</p>")
        runbooks.read_users = ["jdoe"]
        deep = site.add_page("OPS", "Database failover", "<h2>Steps</h2><p>Promote the replica in region two "
                                                         "before you touch DNS.</p>", parent=runbooks)
        deeper = site.add_page("OPS", "Failover drill", "<p>Rehearse the failover drill every quarter.</p>",
                               parent=deep)
        oncall = site.add_page("OPS", "On-call", "<p>The on-call engineer answers pages within fifteen minutes.</p>")
        deck = site.attach(oncall, "rota.pdf", "application/pdf", pdf_bytes(["On-call rota", "Weekly rotation."]))
        site.throttle("/confluence/download/", times=1, retry_after="3")
        (source,) = parse_sources([{"name": "ops", "kind": "confluence", "deployment": "server",
                                    "base_url": site.base_url, "token_env": "CONFLUENCE_TOKEN", "spaces": ["OPS"],
                                    "page_size": 2, "knowledge_set": "ops"}])
        work = tmp_path / "work"
        first = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
        assert first.status == "ok", first.errors
        assert sorted(first.added) == sorted([f"ops/ops/runbooks-{runbooks.id}", f"ops/ops/database-failover-{deep.id}",
                                              f"ops/ops/failover-drill-{deeper.id}", f"ops/ops/on-call-{oncall.id}",
                                              f"ops/ops/on-call-{oncall.id}/rota-att{deck.id}"])
        assert sleeps == [3.0]
        assert [r.query.get("start") for r in site.served(r"^/confluence/rest/api/content$")] == ["0", "2"]
        assert all(r.headers.get("Authorization") == f"Bearer {TOKEN}" for r in site.requests)
        top = Retriever(store).search("promote the replica", kb="t", k=1)[0]
        assert top.location == f"{site.root}/confluence/display/OPS/Database+failover"
        assert top.knowledge_set == "ops"
        hidden = public_search(store, "rehearse failover drill promote replica runbook")
        assert not [d for d in hidden if "runbooks" in d or "failover" in d], "restricted, inherited two levels"
        assert f"ops/ops/on-call-{oncall.id}" in public_search(store, "on-call engineer answers")

        site.edit(oncall, body="<p>The on-call engineer answers pages within ten minutes.</p>")
        deeper.status = "trashed"
        site.requests.clear()
        second = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
        assert (second.updated, second.deleted) == ([f"ops/ops/on-call-{oncall.id}"],
                                                   [f"ops/ops/failover-drill-{deeper.id}"])
        assert [r.path for r in site.served(r"^/confluence/rest/api/content/\d+$")] == [
            f"/confluence/rest/api/content/{oncall.id}"]
        assert site.served("/download/") == []

        refused = sync_source(store, source, [source], work_root=work, default_kb="t",
                              environ={"CONFLUENCE_TOKEN": "expired-pat"})
        assert refused.status == "failed" and "check the personal access token" in refused.errors[0]

        (unknown,) = parse_sources([{**source.model_dump(mode="json", exclude_none=True), "spaces": ["NOPE"]}])
        failed = sync_source(store, unknown, [unknown], work_root=work, default_kb="t", environ=ENV)
        assert failed.status == "failed" and "space NOPE not found" in failed.errors[0]


def test_rejected_credentials_fail_the_run_and_leave_the_index_as_it_was(
        cloud: FakeConfluence, store: IndexStore, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    cloud.add_space("HR", "Human Resources")
    cloud.add_space("IT", "IT Help")
    holidays = cloud.add_page("HR", "Holidays", "<p>Everyone has twenty-five days of paid holiday a year.</p>")
    # As with a scoped API token: the API through another address than the site readers open.
    source = cloud_source(cloud, web_url="https://acme.atlassian.net")
    work = tmp_path / "work"
    assert sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV).status == "ok"
    version = store.latest_version("t")
    assert Retriever(store).search("paid holiday", kb="t", k=1)[0].location == (
        f"https://acme.atlassian.net/wiki/spaces/HR/pages/{holidays.id}/Holidays")

    caplog.set_level(logging.DEBUG)
    wrong = {"CONFLUENCE_TOKEN": "wrong-secret-456"}
    failed = sync_source(store, source, [source], work_root=work, default_kb="t", environ=wrong)
    assert failed.status == "failed"
    assert "rejected the credentials (HTTP 401)" in failed.errors[0] and "token_env" in failed.errors[0]
    assert store.latest_version("t") == version
    assert Retriever(store).search("paid holiday", kb="t", k=1)[0].title == "Holidays"
    shown = str(failed.to_dict()) + caplog.text + "".join(capsys.readouterr())
    assert "wrong-secret-456" not in shown and TOKEN not in shown

    broken = cloud.add_page("IT", "Printers", "<p>Printers are on every floor next to the kitchen.</p>")
    cloud.broken.add(broken.id)
    partial = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
    assert partial.status == "partial" and partial.added == []
    assert partial.errors == [f"it/printers-{broken.id}.html: page {broken.id}: HTTP 500"]
    cloud.broken.clear()
    retried = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
    assert retried.status == "ok" and retried.added == [f"wiki/it/printers-{broken.id}"]

    cloud.throttle("/wiki/api/v2/spaces", times=1, retry_after="3600")
    throttled = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
    assert throttled.status == "failed"
    assert "Retry-After 3600 s is longer than max_retry_after_s (120)" in throttled.errors[0]

    missing = cloud_source(cloud, spaces=["HR", "LEGAL"])
    result = sync_source(store, missing, [missing], work_root=work, default_kb="t", environ=ENV)
    assert result.status == "failed" and "space(s) LEGAL not found" in result.errors[0]


def test_cloud_follows_the_link_header_when_the_body_has_no_next_link(cloud: FakeConfluence, tmp_path: Path) -> None:
    cloud.add_space("HR", "Human Resources")
    cloud.add_space("IT", "IT Help")
    made = [cloud.add_page("HR", f"Policy {n}", f"<p>Policy number {n}.</p>") for n in range(5)]
    cloud.v2_next_in_body = False
    source = cloud_source(cloud, attachments=False, base_url=f"{cloud.base_url}/wiki/")  # as copied from a browser
    assert source.base_url == cloud.base_url
    connector = source.open_connector(tmp_path, environ=ENV)
    listed = connector.changes(None)
    assert sorted(r.path for r in listed.changed) == sorted(f"hr/policy-{n}-{p.id}.html" for n, p in enumerate(made))
    assert [r.query.get("cursor") is not None for r in cloud.served(r"/spaces/\d+/pages$")] == [
        False, True, True, False], "HR: 3 calls (2 by the Link header), IT: 1"
    assert listed.complete and all(r.version == "1" and not r.restricted for r in listed.changed)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"email": None}, "needs 'email'"),
        ({"token_env": None}, "give token_env or token_file"),
        ({"token": "abc"}, "key 'token' would put a credential in the file"),
        ({"api_token": "abc"}, "key 'api_token' would put a credential in the file"),
        ({"base_url": "https://bot:s3cret@acme.atlassian.net"}, "holds credentials"),
        ({"base_url": "acme.atlassian.net"}, "must be an http(s):// URL"),
        ({"spaces": []}, "key 'spaces' List should have at least 1 item"),
        ({"spaces": ["HR", "H R"]}, "'H R' is not a space key"),
        ({"spaces": ["HR", "hr"]}, "a space is listed twice"),
        ({"deployment": "onprem"}, "key 'deployment'"),
    ],
)
def test_bad_confluence_settings_are_refused(extra: dict[str, object], message: str) -> None:
    settings: dict[str, object] = {"name": "wiki", "kind": "confluence", "base_url": "https://acme.atlassian.net",
                                   "email": "bot@acme.example", "token_env": "CONFLUENCE_TOKEN", "spaces": ["HR"]}
    settings.update(extra)
    settings = {k: v for k, v in settings.items() if v is not None}
    with pytest.raises(SourcesConfigError) as exc:
        parse_sources([settings])
    assert message in str(exc.value) and "s3cret" not in str(exc.value) and "abc" not in str(exc.value)


def test_storage_format_becomes_html_with_headings_code_and_notes() -> None:
    rich = confluence.storage_to_html(
        '<ac:layout><ac:layout-section ac:type="two_equal"><ac:layout-cell><h2>Left</h2>'
        '<ac:task-list><ac:task><ac:task-id>1</ac:task-id><ac:task-status>complete</ac:task-status>'
        '<ac:task-body>Order the badge</ac:task-body></ac:task><ac:task><ac:task-id>2</ac:task-id>'
        '<ac:task-status>incomplete</ac:task-status><ac:task-body>Book the desk</ac:task-body></ac:task>'
        '</ac:task-list></ac:layout-cell><ac:layout-cell><ac:structured-macro ac:name="expand">'
        '<ac:parameter ac:name="title">Details</ac:parameter><ac:rich-text-body><h3>Inside</h3><p>Hidden text'
        '</p></ac:rich-text-body></ac:structured-macro><p>Status: <ac:structured-macro ac:name="status">'
        '<ac:parameter ac:name="title">DONE</ac:parameter></ac:structured-macro> '
        '<ac:emoticon ac:name="tick" ac:emoji-fallback="✅"/></p><ac:image><ri:attachment ri:filename="a.png"/>'
        '</ac:image></ac:layout-cell></ac:layout-section></ac:layout>', title="Onboarding")
    assert "<h2>Left</h2>" in rich and "<h3>Inside</h3>" in rich and "<strong>Details</strong>" in rich
    assert "<li>[x] Order the badge</li>" in rich and "<li>[ ] Book the desk</li>" in rich
    assert "Status: [DONE] ✅" in rich and "a.png" not in rich and "ac:" not in rich
    html = confluence.storage_to_html(VPN, title="VPN & setup", restricted=True)
    assert "<title>VPN &amp; setup</title>" in html and '<meta name="visibility" content="restricted">' in html
    assert "<h1>VPN &amp; setup</h1>" in html and "<h2>Connecting</h2>" in html
    assert '<pre><code class="language-bash">northgate connect --gateway eu-west</code></pre>' in html
    assert "<a>the laptop policy</a>" in html
    assert "Confluence macro “jira” is not shown here" in html
    assert "ac:" not in html and "ri:" not in html
