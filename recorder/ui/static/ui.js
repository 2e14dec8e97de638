// The little the pages need beyond HTML: live job progress, the job form's two kinds, "go back".
"use strict";

const ACTIVE = new Set(["queued", "running"]);

function filesize(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) { n /= 1024; unit += 1; }
  return unit ? `${n.toFixed(1)} ${units[unit]}` : `${n} B`;
}

function cell(content, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.append(content);
  return td;
}

function badge(status) {
  const span = document.createElement("span");
  span.className = `badge ${status}`;
  span.textContent = status;
  return span;
}

function broadcastRow(base, item) {
  const link = document.createElement("a");
  link.href = base + encodeURIComponent(item.id);
  link.textContent = item.stream_id;
  const row = document.createElement("tr");
  row.append(
    cell(link),
    cell(badge(item.status)),
    cell(`v${item.version}`, "num"),
    cell((item.started_at || "").slice(0, 19).replace("T", " ")),
    cell(item.error || "", "error"),
  );
  return row;
}

function render(box, job) {
  const { total, done, failed, bytes } = job.progress;
  const bar = box.querySelector("progress");
  if (bar) { bar.max = Math.max(total, 1); bar.value = done + failed; }
  const counts = box.querySelector("[data-counts]");
  if (counts) counts.textContent = `${done} done, ${failed} failed of ${total}`;
  const size = box.querySelector("[data-bytes]");
  if (size) size.textContent = filesize(bytes);
  const status = box.querySelector("[data-status]");
  status.className = `badge ${job.status}`;
  status.textContent = job.status;
  const rows = box.querySelector("[data-broadcasts]");
  if (rows && job.broadcasts.length) {
    rows.replaceChildren(...job.broadcasts.map((item) => broadcastRow(box.dataset.broadcastBase, item)));
  }
}

async function follow(box) {
  // Same-origin JSON authorized by the cookie: the token never reaches this script.
  let state = box.dataset.state;
  while (ACTIVE.has(state)) {
    await new Promise((resolve) => setTimeout(resolve, 2000));
    try {
      const answer = await fetch(box.dataset.job, { headers: { Accept: "application/json" } });
      if (!answer.ok) continue;
      const job = await answer.json();
      render(box, job);
      state = box.dataset.state = job.status;
    } catch {
      // A network blip: try again on the next tick.
    }
  }
}

function jobForm(form) {
  const show = () => {
    const kind = form.querySelector("input[name=kind]:checked").value;
    form.querySelectorAll("[data-kind]").forEach((part) => { part.hidden = part.dataset.kind !== kind; });
  };
  form.querySelectorAll("input[name=kind]").forEach((radio) => radio.addEventListener("change", show));
  show();
}

document.querySelectorAll("[data-job]").forEach(follow);
document.querySelectorAll("[data-job-form]").forEach(jobForm);
document.querySelectorAll("[data-back]").forEach((link) => link.addEventListener("click", (event) => {
  if (history.length > 1) { event.preventDefault(); history.back(); }
}));
