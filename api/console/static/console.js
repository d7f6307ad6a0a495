// Atelier console: submit jobs through the public API and follow a running job. No build step.
// Forms are read with getAttribute: a form's named fields (here "dataset") shadow its DOM properties.
"use strict";

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const err = (data && data.error) || { message: response.statusText };
    throw new Error(err.field ? `${err.field}: ${err.message}` : err.message);
  }
  return data;
}

function value(form, name) {
  const el = form.elements[name];
  return el && el.value !== "" ? el.value : null;
}

const builders = {
  generate(form) {
    const what = value(form, "what");
    const prompt = value(form, "prompt");
    const seed = value(form, "seed");
    if (what === "descriptions") {
      const input = { prompt, n: Number(value(form, "k")) };
      if (seed !== null) input.seed = Number(seed);
      return { type: "describe", input };
    }
    const input = { prompt, n: Number(value(form, "n")) };
    const model = value(form, "model");
    if (model.startsWith("family:")) input.family = model.slice(7); else input.model = model;
    if (what === "images+descriptions") input.descriptions = Math.min(Number(value(form, "k")), input.n);
    const tau = value(form, "min_confidence");
    if (tau !== null) input.min_confidence = Number(tau);
    // family-only sampling settings (diffusion); left out, the model's defaults apply
    const sampling = {};
    for (const name of ["steps", "guidance"]) {
      const given = value(form, name);
      if (given !== null) sampling[name] = Number(given);
    }
    if (Object.keys(sampling).length) input.sampling = sampling;
    if (seed !== null) input.seed = Number(seed);
    return { type: "generate_images", input };
  },
  async similar(form) {
    const input = { k: Number(value(form, "k")) };
    const classifier = value(form, "classifier");
    if (classifier !== null) input.classifier = classifier;
    const file = form.elements.photo.files[0];
    const imageUrl = form.getAttribute("data-image-url");
    if (file) input.image = await toBase64(file);
    else if (value(form, "item_id") !== null) input.item = value(form, "item_id").trim();  // "item" would be elements.item()
    else if (imageUrl) input.image = await toBase64(await (await fetch(imageUrl, { credentials: "same-origin" })).blob());
    else throw new Error("choose a photo or give a catalog item id");
    return { type: "similar", input };
  },
  train(form) {
    const input = { family: value(form, "family"), dataset: value(form, "dataset"), preset: value(form, "preset") };
    const epochs = value(form, "epochs");
    if (epochs !== null) input.epochs = Number(epochs);
    return { type: "train", input };
  },
};

function toBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(new Error("the photo could not be read"));
    reader.readAsDataURL(blob);
  });
}

function wireForms() {
  document.querySelectorAll("form[data-submit]").forEach((form) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = form.querySelector("#form-error");
      error.hidden = true;
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        const job = await api("POST", "/v1/jobs", await builders[form.getAttribute("data-submit")](form));
        window.location.href = `/jobs/${job.id}`;
      } catch (e) {
        error.textContent = e.message;
        error.hidden = false;
        button.disabled = false;
      }
    });
    // arriving from a "Similar" link: search at once
    if (form.getAttribute("data-autosubmit") === "1") form.requestSubmit();
  });
}

const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

async function follow(section) {
  const id = section.dataset.jobId;
  let status = section.dataset.status;
  while (!TERMINAL.has(status)) {
    let job;
    try {
      // the API holds the answer until the job ends or 20 s pass; progress shows between polls
      job = await api("GET", `/v1/jobs/${id}`);
    } catch (e) {
      await new Promise((r) => setTimeout(r, 3000));
      continue;
    }
    document.getElementById("progress-bar").style.width = `${(job.progress.fraction * 100).toFixed(1)}%`;
    document.getElementById("progress-message").textContent = job.progress.message;
    const badge = document.getElementById("status");
    badge.textContent = job.status;
    badge.className = `status ${job.status}`;
    if (TERMINAL.has(job.status)) {
      window.location.reload(); // the server renders the results
      return;
    }
    status = job.status;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function wireCancel() {
  const button = document.querySelector("button[data-cancel]");
  if (!button) return;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api("POST", `/v1/jobs/${button.dataset.cancel}/cancel`);
      button.textContent = "Cancel requested";
    } catch (e) {
      button.textContent = e.message;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  wireForms();
  wireCancel();
  const section = document.getElementById("job");
  if (section) follow(section);
});
