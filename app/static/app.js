// Landing page: upload a photo to /predict, show the answer, send staff feedback.
const drop = document.getElementById("drop");
const input = document.getElementById("file");
const progress = document.getElementById("status");
// The model sees image_size x image_size (models/model.json, via the page). A camera photo is
// megabytes; a copy twice that size on its short side is ~100 kB and gives the server the same
// input, so a slow shelter uplink stays well inside the server's upload deadline.
const sendSide = 2 * Number(document.body.dataset.imageSize || 0);
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
  document.getElementById("error").textContent = "";
  document.getElementById("answer").textContent = "";
  show("result", false);
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
    document.getElementById("feedback-status").textContent = "";
    show("result", true);
    const name = body.prediction.charAt(0).toUpperCase() + body.prediction.slice(1);
    document.getElementById("answer").textContent = `${name}, ${pct}% sure`;
  } catch {
    fail("the service could not be reached; check the connection and try again");
  } finally {
    input.disabled = false;
    if (focused) input.focus();
    input.value = "";  // choosing the same photo again classifies it again
    progress.textContent = "";
  }
}

input.addEventListener("change", () => input.files[0] && classify(input.files[0]));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0] && !input.disabled) classify(e.dataTransfer.files[0]);
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
