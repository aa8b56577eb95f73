// Landlord console: applies live events to the page without reloading.
// The page says where its events come from (body[data-live-url]) and what
// to poll when EventSource fails (body[data-poll-url]); body[data-live]
// says which is in use (sse | polling | off). See docs/console.md.
(function () {
  "use strict";
  var body = document.body;
  var eventsUrl = body.getAttribute("data-live-url");
  var pollUrl = body.getAttribute("data-poll-url");
  if (!eventsUrl) { return; }
  var tenantPage = document.querySelector('[data-testid="tenant"]');
  var refreshTimer = null;
  var polling = null;

  function setStatus(key, status) {
    if (!status) { return; }
    var cells = document.querySelectorAll('[data-testid="tenant-status"][data-tenant="' + CSS.escape(key) + '"]');
    cells.forEach(function (cell) {
      cell.textContent = status;
      cell.setAttribute("data-status", status);
    });
  }

  function setStep(sagaId, step, state) {
    if (!sagaId || !step || !state) { return false; }
    var row = document.querySelector('[data-testid="step"][data-saga-id="' + CSS.escape(sagaId) +
      '"][data-step="' + CSS.escape(step) + '"]');
    if (!row) { return false; }
    row.setAttribute("data-state", state);
    var cell = row.querySelector('[data-testid="step-state"]');
    if (cell) { cell.textContent = state; }
    return true;
  }

  function addLine(ev) {
    var list = document.querySelector('[data-testid="events"]');
    if (!list) { return; }
    var li = document.createElement("li");
    li.setAttribute("data-testid", "event");
    li.setAttribute("data-event", ev.event || "");
    var text = (ev.time || "") + " " + (ev.event || "");
    if (ev.step) { text += " " + ev.step; }
    var d = ev.detail || {};
    if (d.error && d.error.message) { text += ": " + d.error.message; }
    if (d.reason) { text += ": " + d.reason; }
    li.textContent = text;
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 200) { list.removeChild(list.lastChild); }
  }

  // The tenant page re-reads its fragment (status, sagas) when an event
  // names something the page does not show yet, or ends a saga.
  function scheduleRefresh() {
    if (!tenantPage || refreshTimer) { return; }
    refreshTimer = setTimeout(function () { refreshTimer = null; poll(); }, 300);
  }

  function applyFragment(data) {
    if (data.items) {
      data.items.forEach(function (item) { setStatus(item.key, item.status); });
      return;
    }
    setStatus(data.key, data.status);
    var sagas = document.querySelector('[data-testid="sagas"]');
    if (!sagas || !data.sagas) { return; }
    var html = data.sagas.map(function (s) { return s.html; }).join("");
    if (sagas.innerHTML !== html) { sagas.innerHTML = html; }
  }

  function poll() {
    if (!pollUrl) { return; }
    fetch(pollUrl, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { applyFragment(data); } })
      .catch(function () {});
  }

  function apply(ev) {
    addLine(ev);
    if (ev.status) { setStatus(ev.tenant, ev.status); }
    var known = setStep(ev.saga_id, ev.step, ev.step_state);
    var ends = ["activated", "provisioning_failed", "cancelled", "operation_failed", "suspended", "resumed",
      "deletion_scheduled", "restored", "deleted", "accepted", "provisioning_started", "operation_started",
      "compensation_started", "step_compensated"];
    if ((ev.step && !known) || ends.indexOf(ev.event) >= 0) { scheduleRefresh(); }
  }

  function startPolling() {
    if (polling) { return; }
    body.setAttribute("data-live", "polling");
    poll();
    polling = setInterval(poll, 3000);
  }

  if (!window.EventSource) { startPolling(); return; }
  var source = new EventSource(eventsUrl, { withCredentials: true });
  source.onopen = function () {
    if (!polling) { body.setAttribute("data-live", "sse"); }
    // What happened between the page's render and now.
    if (tenantPage) { poll(); }
  };
  source.onmessage = function (message) {
    try { apply(JSON.parse(message.data)); } catch (e) { /* not JSON: ignored */ }
  };
  source.onerror = function () {
    // The browser would retry; the console polls instead, which also
    // covers proxies that do not pass Server-Sent Events through.
    source.close();
    startPolling();
  };
})();
