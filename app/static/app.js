// Landing page: upload a photo to /predict, show the answer, send staff feedback; several
// photos or a dropped folder go to /predict/batch and come back as a table.
const drop = document.getElementById("drop");
const input = document.getElementById("file");
const progress = document.getElementById("status");
// The model sees image_size x image_size (models/model.json, via the page). A camera photo is
// megabytes; a copy twice that size on its short side is ~100 kB and gives the server the same
// input, so a slow shelter uplink stays well inside the server's upload deadline.
const sendSide = 2 * Number(document.body.dataset.imageSize || 0);
// What one /predict/batch request may hold (MAX_BATCH_FILES, MAX_UPLOAD_BYTES; a little room
// is kept for the form's own bytes).
const batchLimit = Number(document.body.dataset.batchLimit || 1);
const uploadLimit = Number(document.body.dataset.uploadLimit || 0);
const FORM_ROOM = 64 * 1024;
let token = null;
let previewUrl = null;

function show(id, visible) { document.getElementById(id).hidden = !visible; }

function fail(message) {
  show("result", false);
  document.getElementById("error").textContent = message;
}

// The photo as the browser shows it (EXIF orientation applied, transparency on white), short
// side sendSide, as a JPEG; the file itself when it is already small or the browser cannot
// decode it (the server then says what is wrong with it).
async function shrink(file) {
  if (!sendSide) return file;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    return file;
  }
  const scale = sendSide / Math.min(bitmap.width, bitmap.height);
  if (scale >= 1) { bitmap.close(); return file; }
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  return blob ? new File([blob], "photo.jpg", { type: "image/jpeg" }) : file;
}

async function classify(file) {
  clearAnswers();
  const preview = document.getElementById("preview");
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  preview.src = previewUrl;
  preview.hidden = false;
  // Disabled while the photo goes up, the input loses the focus: a keyboard user gets it back.
  const focused = document.activeElement === input;
  input.disabled = true;
  progress.textContent = "Classifying…";
  try {
    const form = new FormData();
    form.append("file", await shrink(file));
    const resp = await fetch("/predict", { method: "POST", body: form });
    const body = await resp.json().catch(() => ({ detail: `the service answered ${resp.status} ${resp.statusText}` }));
    if (!resp.ok) return fail(body.detail || body.error);
    token = body.feedback_token;
    document.getElementById("label").textContent = body.prediction;
    const pct = (body.confidence * 100).toFixed(1);
    document.getElementById("confidence").textContent = `${pct}% sure`;
    document.getElementById("bar-fill").style.width = `${pct}%`;
    document.getElementById("not-a-pet").hidden = body.not_a_pet !== true;
    document.getElementById("feedback-status").textContent = "";
    show("result", true);
    const name = body.prediction.charAt(0).toUpperCase() + body.prediction.slice(1);
    const doubt = body.not_a_pet === true ? ". This does not look like a cat or a dog" : "";
    document.getElementById("answer").textContent = `${name}, ${pct}% sure${doubt}`;
  } catch {
    fail("the service could not be reached; check the connection and try again");
  } finally {
    input.disabled = false;
    if (focused) input.focus();
    input.value = "";  // choosing the same photo again classifies it again
    progress.textContent = "";
  }
}

function clearAnswers() {
  document.getElementById("error").textContent = "";
  document.getElementById("answer").textContent = "";
  show("result", false);
  show("batch", false);
}

function row(name) {
  const tr = document.createElement("tr");
  for (const text of [name, "waiting…", ""]) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
  }
  document.getElementById("batch-rows").appendChild(tr);
  return tr;
}

function fill(tr, result) {
  const [, answer, sure] = tr.children;
  answer.classList.toggle("failed", result.status !== 200);
  if (result.status === 200) {
    answer.textContent = result.not_a_pet === true
      ? `${result.prediction}, but it does not look like a cat or a dog` : result.prediction;
    sure.textContent = `${(result.confidence * 100).toFixed(1)}%`;
  } else {
    answer.textContent = result.detail || result.error;
    sure.textContent = "—";
  }
}

// Photos in batches the service takes: at most batchLimit each, and their bytes within its
// upload limit; a photo over the limit on its own is told so here and never sent.
async function* batchesOf(items) {
  let batch = [];
  let bytes = 0;
  for (const item of items) {
    item.file = await shrink(item.file);
    if (uploadLimit && item.file.size + FORM_ROOM > uploadLimit) {
      fill(item.tr, { status: 413, detail: `larger than the ${(uploadLimit / 1048576).toFixed(0)} MB the service takes` });
      continue;
    }
    if (batch.length && (batch.length >= batchLimit || (uploadLimit && bytes + item.file.size + FORM_ROOM > uploadLimit))) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(item);
    bytes += item.file.size;
  }
  if (batch.length) yield batch;
}

async function classifyMany(files) {
  clearAnswers();
  document.getElementById("preview").hidden = true;
  document.getElementById("batch-rows").replaceChildren();
  const caption = document.getElementById("batch-summary");
  caption.textContent = `${files.length} photos`;
  show("batch", true);
  const items = files.map(({ name, file }) => ({ name, file, tr: row(name) }));
  const focused = document.activeElement === input;
  input.disabled = true;
  let done = 0;
  try {
    for await (const batch of batchesOf(items)) {
      progress.textContent = `Classifying ${done + 1}–${done + batch.length} of ${items.length}…`;
      const form = new FormData();
      for (const item of batch) form.append("file", item.file, item.name);
      const resp = await fetch("/predict/batch", { method: "POST", body: form });
      const body = await resp.json().catch(() => ({ detail: `the service answered ${resp.status} ${resp.statusText}` }));
      batch.forEach((item, i) => fill(item.tr, resp.ok ? body.results[i] : { status: resp.status, ...body }));
      done += batch.length;
    }
  } catch {
    document.getElementById("error").textContent = "the service could not be reached; check the connection and try again";
  } finally {
    input.disabled = false;
    if (focused) input.focus();
    input.value = "";
    progress.textContent = "";
  }
  const answers = items.map((item) => item.tr.children[1]);
  const count = (label) => answers.filter((td) => !td.classList.contains("failed") && td.textContent === label).length;
  const failed = answers.filter((td) => td.classList.contains("failed") || td.textContent === "waiting…").length;
  const n = (k, what) => `${k} ${what}${k === 1 ? "" : "s"}`;
  const summary = `${n(items.length, "photo")}: ${n(count("cat"), "cat")}, ${n(count("dog"), "dog")}` +
    (failed ? `, ${failed} not classified` : "");
  caption.textContent = summary;
  document.getElementById("answer").textContent = summary;
}

function choose(files) {
  const photos = files.filter(({ name }) => !name.split("/").pop().startsWith("."));  // .DS_Store and the like
  if (photos.length === 1) classify(photos[0].file);
  else if (photos.length > 1) classifyMany(photos);
}

// A dropped folder is walked for its files; their paths inside it name the table's rows.
async function filesOf(entry) {
  if (entry.isFile) return [{ name: entry.fullPath.replace(/^\//, ""), file: await new Promise((ok, no) => entry.file(ok, no)) }];
  const reader = entry.createReader();
  const found = [];
  for (;;) {
    const entries = await new Promise((ok, no) => reader.readEntries(ok, no));  // a few at a time
    if (!entries.length) return found;
    for (const child of entries) found.push(...(await filesOf(child)));
  }
}

input.addEventListener("change", () => choose([...input.files].map((file) => ({ name: file.name, file }))));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", async (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (input.disabled) return;
  // The entries must be taken while the event lasts: the list is emptied once it is over.
  const entries = [...e.dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  const files = [...e.dataTransfer.files].map((file) => ({ name: file.name, file }));
  if (!entries.some((entry) => entry.isDirectory)) return choose(files);
  try {
    choose((await Promise.all(entries.map(filesOf))).flat());
  } catch {
    document.getElementById("error").textContent = "the folder could not be read; choose its photos instead";
  }
});
document.querySelectorAll("button[data-label]").forEach((button) => {
  button.addEventListener("click", async () => {
    if (!token) return;
    const feedback = document.getElementById("feedback-status");
    try {
      const resp = await fetch("/feedback", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ feedback_token: token, label: button.dataset.label }),
      });
      const body = await resp.json().catch(() => ({ detail: `the service answered ${resp.status}` }));
      feedback.textContent = resp.ok ? "Thank you!" : (body.detail || body.error);
    } catch {
      feedback.textContent = "the service could not be reached; try again";
    }
  });
});
