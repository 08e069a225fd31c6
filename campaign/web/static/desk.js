// The desk's only script (no library): local times, live progress, fresh charts.
"use strict";

function showLocalTimes(root) {
  const format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    timeZoneName: "short",
  });
  root.querySelectorAll("time[datetime]").forEach((el) => {
    const when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when)) {
      el.title = el.textContent;  // the UTC text stays as the tooltip
      el.textContent = format.format(when);
    }
  });
}

function setText(id, text) {
  const el = document.getElementById(id);
  if (el) el.textContent = text;
}

async function pollProgress(section) {
  const url = section.dataset.statusUrl;
  let last = "";
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 2000));
    let data;
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) continue;
      data = await response.json();
    } catch (_) {
      continue;  // the server restarts or the network blips: keep polling
    }
    const bar = document.getElementById("progress-bar");
    bar.max = Math.max(1, data.contacts);
    bar.value = data.done;
    setText("done", data.done);
    setText("contacts", data.contacts);
    setText("remaining", data.remaining);
    setText("in-flight", data.in_flight);
    setText("status", data.status);
    setText("answer-rate", data.answer_rate === null ? "-" : Math.round(100 * data.answer_rate) + "%");
    setText("run-state", data.running ? "running" : data.start_requested ? "start requested" : "not running");
    setText("by-status", Object.entries(data.contacts_by_status).sort().map(([k, v]) => k + " " + v).join(", ") || "none");
    const due = document.getElementById("next-due");
    if (data.next_due) {
      due.replaceChildren(Object.assign(document.createElement("time"), { textContent: data.next_due }));
      due.firstChild.setAttribute("datetime", data.next_due);
      showLocalTimes(due);
    } else {
      due.textContent = "-";
    }
    const key = data.attempts + ":" + data.done + ":" + data.in_flight;
    if (key !== last) {
      last = key;
      document.querySelectorAll("img[data-chart]").forEach((img) => {
        img.src = img.src.replace(/([?&]t=)[^&]*/, "$1" + Date.now());
      });
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  showLocalTimes(document);
  const section = document.getElementById("progress");
  if (section && section.dataset.statusUrl) pollProgress(section);
});
