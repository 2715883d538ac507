// Landing page: upload a photo to /predict, show the answer, send staff feedback.
const drop = document.getElementById("drop");
const input = document.getElementById("file");
let token = null;

function show(id, visible) { document.getElementById(id).hidden = !visible; }

async function classify(file) {
  show("error", false);
  const preview = document.getElementById("preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  const form = new FormData();
  form.append("file", file);
  const resp = await fetch("/predict", { method: "POST", body: form });
  const body = await resp.json();
  if (!resp.ok) {
    show("result", false);
    document.getElementById("error").textContent = body.detail || body.error;
    show("error", true);
    return;
  }
  token = body.feedback_token;
  document.getElementById("label").textContent = body.prediction;
  const pct = (body.confidence * 100).toFixed(1);
  document.getElementById("confidence").textContent = `${pct}% sure`;
  document.getElementById("bar-fill").style.width = `${pct}%`;
  document.getElementById("feedback-status").textContent = "";
  show("result", true);
}

input.addEventListener("change", () => input.files[0] && classify(input.files[0]));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]);
});
document.querySelectorAll("button[data-label]").forEach((button) => {
  button.addEventListener("click", async () => {
    if (!token) return;
    const resp = await fetch("/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ feedback_token: token, label: button.dataset.label }),
    });
    const body = await resp.json();
    document.getElementById("feedback-status").textContent = resp.ok ? "Thank you!" : (body.detail || body.error);
  });
});
