(function () {
  "use strict";
  // The conversations are parsed when the first one is opened, not before the page shows.
  var data = null;
  function conversations() { return data || (data = JSON.parse(document.getElementById("runs-data").textContent)); }
  var rows = Array.prototype.slice.call(document.querySelectorAll("table.runs tbody tr"));
  var dialog = document.getElementById("run");
  var body = document.getElementById("run-body");
  var text = document.getElementById("filter-text"), model = document.getElementById("filter-model"), status = document.getElementById("filter-status");
  var shown = document.getElementById("shown");
  function el(tag, cls, content) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (content !== undefined && content !== null) e.textContent = String(content);
    return e;
  }
  function usd(v) { return "$" + Number(v || 0).toFixed(6); }
  function json(v) {
    if (typeof v === "string") { try { return JSON.stringify(JSON.parse(v), null, 2); } catch (e) { return v; } }
    return JSON.stringify(v, null, 2);
  }
  function message(role, content, cls) {
    var m = el("div", "msg " + (cls || role));
    m.appendChild(el("span", "role", role));
    m.appendChild(document.createTextNode(content));
    return m;
  }
  function checks(list) {
    var ul = el("ul", "checks");
    list.forEach(function (c) {
      var li = el("li");
      li.appendChild(el("b", c.passed ? "ok" : "no", (c.passed ? "✓ " : "✗ ") + c.check));
      li.appendChild(document.createTextNode(" " + c.detail));
      ul.appendChild(li);
    });
    return ul;
  }
  function open(i) {
    var row = rows.filter(function (r) { return r.dataset.i === String(i); })[0];
    if (!row) return;
    var run = conversations()[i];
    body.textContent = "";
    var title = el("h2", null, row.dataset.scenario + " · " + row.dataset.model + " · #" + row.cells[2].textContent + " ");
    title.id = "run-title";
    title.appendChild(el("span", "chip " + row.dataset.status, row.dataset.status.replace("_", " ")));
    body.appendChild(title);
    if (!run) {
      body.appendChild(el("p", "muted", row.dataset.missing || "no conversation was recorded"));
    } else {
      if (run.log) body.appendChild(el("p", "muted", "log: " + run.log));
      if (run.error) body.appendChild(message("error", run.error, "error"));
      if (run.system) {
        var d = el("details"); d.appendChild(el("summary", null, "system prompt")); d.appendChild(message("system", run.system)); body.appendChild(d);
      }
      run.turns.forEach(function (t, n) {
        var box = el("div", "turn");
        var head = el("h3", null, "Turn " + (n + 1) + " ");
        head.appendChild(el("span", "chip " + t.status, t.status));
        head.appendChild(el("span", "muted", " · " + t.latency_ms + " ms · " + t.prompt + " + " + t.completion + " tokens · " + (run.unpriced ? "unpriced" : usd(t.cost))));
        box.appendChild(head);
        box.appendChild(message(t.simulated ? "user (simulated)" : "user", t.user, "user"));
        t.said.forEach(function (s) { box.appendChild(message("assistant, beside its tool calls", s, "assistant")); });
        t.tools.forEach(function (c) {
          var tool = el("div", "tool");
          tool.appendChild(el("span", "role", "tool call · " + c.name + (c.source ? " · " + c.source : "") + " · " + c.ms + " ms"));
          tool.appendChild(el("pre", null, json(c.arguments)));
          if (c.error) tool.appendChild(el("pre", "no", "error: " + c.error));
          else tool.appendChild(el("pre", "ok", "→ " + json(c.result)));
          box.appendChild(tool);
        });
        if (t.reply !== null) box.appendChild(message("assistant", t.reply));
        if (t.error) box.appendChild(message("error", t.error, "error"));
        if (t.checks.length) box.appendChild(checks(t.checks));
        if (t.judge) {
          var j = t.judge;
          var jd = el("div", "tool");
          jd.appendChild(el("span", "role", "judge · " + j.model + " · " + j.prompt + " + " + j.completion + " tokens · " + (j.unpriced ? "unpriced" : usd(j.cost))));
          jd.appendChild(el("pre", null, "rubric: " + j.rubric));
          if (j.error) jd.appendChild(el("pre", "no", "no verdict: " + j.error));
          else jd.appendChild(el("pre", j.pass ? "ok" : "no", (j.pass ? "pass: " : "fail: ") + j.reason));
          box.appendChild(jd);
        }
        var table = el("table", "requests");
        var hr = el("tr");
        ["request", "prompt", "completion", "cached", "cost", "latency", "attempts", "cache", "finish"].forEach(function (h) { hr.appendChild(el("th", null, h)); });
        table.appendChild(hr);
        t.requests.forEach(function (r, k) {
          var tr = el("tr");
          [k + 1, r.prompt + (r.estimated ? " (est.)" : ""), r.completion, r.cached, run.unpriced ? "unpriced" : usd(r.cost), r.latency_ms + " ms", r.attempts, r.cache, r.error ? "error: " + r.error : (r.finish || "")].forEach(function (v) { tr.appendChild(el("td", null, v)); });
          table.appendChild(tr);
        });
        box.appendChild(table);
        body.appendChild(box);
      });
    }
    if (run && run.checks && run.checks.length) {
      var whole = el("div", "turn");
      whole.appendChild(el("h3", null, "The whole conversation · ended: " + run.ended));
      whole.appendChild(checks(run.checks));
      body.appendChild(whole);
    }
    if (!dialog.open) dialog.showModal();
    if (history.replaceState) history.replaceState(null, "", "#run-" + i);
  }
  function apply() {
    var q = text.value.toLowerCase(), m = model.value, s = status.value, count = 0;
    rows.forEach(function (r) {
      var ok = (!q || r.dataset.scenario.toLowerCase().indexOf(q) >= 0) && (!m || r.dataset.model === m) &&
        (!s || r.dataset.status === s || (s === "not-passed" && r.dataset.status !== "passed"));
      if (r.hidden === ok) r.hidden = !ok;
      if (ok) count++;
    });
    document.querySelectorAll("table.matrix tbody tr").forEach(function (r) {
      var hide = !!q && r.dataset.scenario.toLowerCase().indexOf(q) < 0;
      if (r.hidden !== hide) r.hidden = hide;
    });
    shown.textContent = count + " of " + rows.length + " runs";
    return count;
  }
  [text, model, status].forEach(function (input) { input.addEventListener("input", apply); });
  var tbody = document.querySelector("table.runs tbody");
  function rowOf(e) { var r = e.target.closest("tr[data-i]"); return r && tbody.contains(r) ? r : null; }
  tbody.addEventListener("click", function (e) { var r = rowOf(e); if (r) open(r.dataset.i); });
  tbody.addEventListener("keydown", function (e) { var r = rowOf(e); if (r && e.key === "Enter") open(r.dataset.i); });
  document.querySelectorAll("td.cell[data-scenario]").forEach(function (cell) {
    function pick() {
      text.value = cell.dataset.scenario; model.value = cell.dataset.model; status.value = "";
      apply();
      var visible = rows.filter(function (r) { return !r.hidden && r.dataset.scenario === cell.dataset.scenario; });
      var worst = visible.filter(function (r) { return r.dataset.status !== "passed"; })[0] || visible[0];
      if (worst) open(worst.dataset.i);
    }
    cell.addEventListener("click", pick);
    cell.addEventListener("keydown", function (e) { if (e.key === "Enter") pick(); });
  });
  dialog.addEventListener("close", function () { if (history.replaceState) history.replaceState(null, "", location.pathname + location.search); });
  // A view can be linked to: ?q=TEXT&model=MODEL&status=STATUS set the filters.
  var params = new URLSearchParams(location.search);
  if (params.get("q")) text.value = params.get("q");
  if (params.get("model")) model.value = params.get("model");
  if (params.get("status")) status.value = params.get("status");
  apply();
  var wanted = /^#run-(\d+)$/.exec(location.hash);
  if (wanted) open(wanted[1]);
  document.documentElement.setAttribute("data-ready-ms", String(Math.round(performance.now())));
})();
