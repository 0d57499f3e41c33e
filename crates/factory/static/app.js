// OpenLedger ModelFactory UI: the little script behind the server-rendered pages.
// Every action goes through an EIP-1193 provider: the injected wallet (MetaMask signs) or the
// built-in dev provider, which forwards requests to the node's JSON-RPC where the devnet's
// unlocked dev accounts sign. The server encodes calls (/api/ui/tx/...) and explains failures
// (/api/ui/explain), so this file only moves data between forms, the server and the provider.
"use strict";
(function () {
  const CFG = window.OL_CONFIG || {};
  const ACCOUNT = window.OL_ACCOUNT;
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  // ---------------------------------------------------------------- providers
  let rpcId = 0;
  const devProvider = {
    async request({ method, params }) {
      const res = await fetch(CFG.rpc, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: ++rpcId, method, params: params || [] }),
      });
      let body;
      try { body = await res.json(); } catch (_) { throw new Error("The node did not answer (HTTP " + res.status + ")."); }
      if (body.error) { const e = new Error(body.error.message); e.code = body.error.code; e.data = body.error.data; throw e; }
      return body.result;
    },
  };
  function getCookie(name) {
    const m = document.cookie.split(";").map((s) => s.trim()).find((s) => s.startsWith(name + "="));
    return m ? decodeURIComponent(m.slice(name.length + 1)) : null;
  }
  function setCookie(name, value) {
    document.cookie = name + "=" + encodeURIComponent(value) + "; path=/; max-age=31536000; samesite=lax";
  }
  function provider() {
    return getCookie("ol_wallet") === "injected" && window.ethereum ? window.ethereum : devProvider;
  }
  // Reads always go to the node: a wallet may be on another network.
  const rpc = (method, params) => devProvider.request({ method, params });

  // ---------------------------------------------------------------- messages
  function say(el, text, kind) {
    if (!el) return;
    el.textContent = text;
    el.className = "status" + (kind ? " " + kind : "");
    if (kind === "error") el.setAttribute("role", "alert"); else el.setAttribute("role", "status");
  }
  function toast(text, kind) {
    const t = $("#toast");
    say(t, text, kind);
    t.className = "toast " + (kind || "");
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 6000);
  }
  async function explain(err) {
    const data = err && err.data && (typeof err.data === "string" ? err.data : err.data.data);
    try {
      const r = await postJson("/api/ui/explain", { data: data || null, message: (err && err.message) || String(err) });
      return r.message;
    } catch (_) {
      return (err && err.message) || String(err);
    }
  }
  async function postJson(url, body) {
    const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    let json = null;
    try { json = await res.json(); } catch (_) { /* not JSON */ }
    if (!res.ok) {
      const msg = json && json.error ? json.error.message : "The server answered " + res.status + ".";
      const e = new Error(msg); e.status = res.status; e.type = json && json.error && json.error.type; e.plain = true;
      throw e;
    }
    return json;
  }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const hex = (n) => "0x" + BigInt(n).toString(16);

  // ---------------------------------------------------------------- transactions
  async function waitReceipt(hash, status) {
    for (let i = 0; i < 600; i++) {
      const r = await rpc("eth_getTransactionReceipt", [hash]);
      if (r) return r;
      if (i % 5 === 4) say(status, "Waiting for the transaction to be included in a block… (" + Math.round(i / 5) + " s)");
      await sleep(200);
    }
    throw new Error("The transaction was not included within two minutes.");
  }
  // Prepares `action` on the server, sends it through the provider, waits for the receipt.
  async function sendAction(action, args, status) {
    say(status, "Preparing the transaction…", "busy");
    const call = await postJson("/api/ui/tx/" + action, Object.assign({ from: ACCOUNT }, args));
    say(status, getCookie("ol_wallet") === "injected" ? "Confirm in your wallet…" : "Signing with the dev account…", "busy");
    const tx = { from: ACCOUNT, to: call.to, data: call.data };
    if (call.value && BigInt(call.value) !== 0n) tx.value = hex(call.value);
    const hash = await provider().request({ method: "eth_sendTransaction", params: [tx] });
    say(status, "Sent; waiting for the block…", "busy");
    const receipt = await waitReceipt(hash, status);
    if (receipt.status !== "0x1") {
      throw new Error("The transaction was included but failed (reverted). See it in the explorer: " + hash);
    }
    return { hash, receipt };
  }
  window.OL = { sendAction, rpc, provider, explain, postJson };

  function formArgs(form) {
    const args = {};
    for (const el of form.elements) {
      if (!el.name || el.type === "submit" || el.type === "file") continue;
      if (el.type === "checkbox") args[el.name] = el.checked;
      else if (el.dataset.json !== undefined) args[el.name] = JSON.parse(el.value || "null");
      else args[el.name] = el.value;
    }
    return args;
  }
  function statusOf(form) {
    return $(".status", form) || $("[data-shared-status]", form.parentElement) || null;
  }
  async function afterSuccess(form, status, hash) {
    say(status, "Done. ", "ok");
    const a = document.createElement("a");
    a.href = "/explorer/tx/" + hash; a.textContent = "View the transaction";
    status && status.appendChild(a);
    if (form.dataset.after === "reload") { await sleep(600); location.reload(); }
  }
  function bindActionForms() {
    $$("form[data-action]").forEach((form) => {
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const status = statusOf(form);
        const buttons = $$("button", form);
        buttons.forEach((b) => (b.disabled = true));
        try {
          const { hash } = await sendAction(form.dataset.action, formArgs(form), status);
          await afterSuccess(form, status, hash);
        } catch (e) {
          say(status, e.plain ? e.message : await explain(e), "error");
        } finally {
          buttons.forEach((b) => (b.disabled = false));
        }
      });
    });
  }

  // ---------------------------------------------------------------- account
  function bindAccount() {
    const sw = $("[data-account-switch]");
    if (sw) sw.addEventListener("change", () => { setCookie("ol_account", sw.value); setCookie("ol_wallet", "dev"); location.reload(); });
    $$("[data-switch-to]").forEach((b) => b.addEventListener("click", () => {
      setCookie("ol_account", b.dataset.switchTo); setCookie("ol_wallet", "dev"); location.reload();
    }));
    const use = $("[data-use-dev]");
    if (use) use.addEventListener("click", () => { setCookie("ol_wallet", "dev"); setCookie("ol_account", (CFG.devAccounts || [])[0] || ""); location.reload(); });
    const c = $("[data-connect-wallet]");
    if (c) c.addEventListener("click", async () => {
      const status = $(".status", c.parentElement);
      if (!window.ethereum) { say(status, "No browser wallet found. Install MetaMask, or keep using the dev accounts.", "error"); return; }
      try {
        const [addr] = await window.ethereum.request({ method: "eth_requestAccounts" });
        const chain = parseInt(await window.ethereum.request({ method: "eth_chainId" }), 16);
        if (chain !== CFG.chainId) {
          say(status, "Your wallet is on chain " + chain + "; switch it to chain " + CFG.chainId + " (RPC " + location.origin + CFG.rpc + ").", "error");
          return;
        }
        setCookie("ol_account", addr); setCookie("ol_wallet", "injected"); location.reload();
      } catch (e) { say(status, await explain(e), "error"); }
    });
  }

  // ---------------------------------------------------------------- uploads
  function upload(url, file, headers, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
      xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
      xhr.onload = () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
        if (xhr.status >= 200 && xhr.status < 300) resolve(body);
        else { const e = new Error(body && body.error ? body.error.message : "Upload failed (" + xhr.status + ")."); e.type = body && body.error && body.error.type; e.status = xhr.status; reject(e); }
      };
      xhr.onerror = () => reject(new Error("The upload was interrupted; nothing was stored. Try again."));
      xhr.send(file);
    });
  }
  const UPLOAD_WORDS = {
    bad_name: "This kind of file is not accepted: use .txt, .md, .jsonl or .csv.",
    too_large: "The file is larger than a contribution may be.",
    too_many_rows: "The file has more rows than a contribution may have; split it.",
    empty: "The file has no usable rows.",
    invalid_utf8: "The file is not UTF-8 text.",
    duplicate_content: "The same file is already in this Datanet.",
    contributor_not_allowed: "This Datanet is permissioned and you are not on its list of contributors.",
  };
  function bindUploads() {
    $$("form[data-upload]").forEach((form) => {
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const status = $(".status", form), bar = $("progress", form), report = $("[data-report]", form);
        const file = $("input[type=file]", form).files[0];
        report.textContent = "";
        if (!file) { say(status, "Choose a file first.", "error"); return; }
        const ext = (file.name.split(".").pop() || "").toLowerCase();
        if (!["txt", "md", "jsonl", "csv"].includes(ext) || !file.name.includes(".")) {
          say(status, "“" + file.name + "” is not a file type Datanets accept: use .txt, .md, .jsonl or .csv. Nothing was uploaded.", "error");
          return;
        }
        if (file.size > CFG.maxUploadBytes) {
          say(status, "“" + file.name + "” is " + (file.size / 1048576).toFixed(1) + " MB; a contribution may be at most " + (CFG.maxUploadBytes / 1048576).toFixed(1) + " MB. Nothing was uploaded.", "error");
          return;
        }
        const buttons = $$("button", form); buttons.forEach((b) => (b.disabled = true));
        try {
          say(status, "Hashing the file…", "busy");
          const hashRes = await fetch("/api/ui/hash", { method: "POST", body: file });
          const h = await hashRes.json();
          if (!hashRes.ok) throw Object.assign(new Error(h.error.message), { plain: true });
          const datanetId = Number(form.dataset.upload);
          const typed = await postJson("/api/ui/typed/upload", { signer: ACCOUNT, datanetId, contentHash: h.contentHash });
          say(status, "Sign the upload request…", "busy");
          const sig = await provider().request({ method: "eth_signTypedData_v4", params: [ACCOUNT, JSON.stringify(typed.typedData)] });
          const headers = Object.assign({}, typed.headers, { "x-ol-signature": sig.replace(/^0x/, ""), "content-type": "application/octet-stream" });
          const cols = form.elements.columns && form.elements.columns.value.trim();
          const url = "/api/datanets/" + datanetId + "/uploads?name=" + encodeURIComponent(file.name) + (cols ? "&columns=" + encodeURIComponent(cols) : "");
          bar.hidden = false; bar.value = 0;
          const receipt = await upload(url, file, headers, (f) => { bar.value = Math.round(f * 100); say(status, "Uploading… " + Math.round(f * 100) + "%", "busy"); });
          bar.value = 100;
          const rep = document.createElement("div");
          rep.innerHTML = "<h3>Validation report</h3>";
          const dl = document.createElement("dl"); dl.className = "facts small";
          const add = (k, v) => { const dt = document.createElement("dt"); dt.textContent = k; const dd = document.createElement("dd"); dd.textContent = v; dl.append(dt, dd); };
          add("Rows", receipt.rowCount); add("Quality score", receipt.score + " / 100"); add("Size", receipt.byteSize + " bytes");
          add("Notes", receipt.reasons.length ? receipt.reasons.join("; ") : "none");
          rep.appendChild(dl); report.appendChild(rep);
          const { hash } = await sendAction("contribute", { datanetId, contentHash: receipt.contentHash, byteSize: receipt.byteSize, rowCount: receipt.rowCount, score: receipt.score, rowsRoot: receipt.rowsRoot }, status);
          await afterSuccess(form, status, hash);
        } catch (e) {
          bar.hidden = true;
          say(status, e.plain ? e.message : (UPLOAD_WORDS[e.type] ? UPLOAD_WORDS[e.type] + " (" + e.message + ")" : (e.type ? e.message : await explain(e))), "error");
        } finally { buttons.forEach((b) => (b.disabled = false)); }
      });
    });
  }

  // ---------------------------------------------------------------- governance time travel
  function bindAdvance() {
    $$("[data-advance]").forEach((b) => b.addEventListener("click", async () => {
      const status = $(".status", b.parentElement);
      try {
        say(status, "Advancing the devnet clock…", "busy");
        await rpc("evm_increaseTime", [hex(b.dataset.advance)]);
        await rpc("evm_mine", []);
        say(status, "Advanced " + b.dataset.advance + " s.", "ok");
        await sleep(300); location.reload();
      } catch (e) { say(status, await explain(e), "error"); }
    }));
  }

  // ---------------------------------------------------------------- explorer search
  function bindExplorer() {
    const f = $("form[data-explorer-search]");
    if (!f) return;
    f.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const q = f.elements.q.value.trim();
      if (/^0x[0-9a-fA-F]{64}$/.test(q)) location.href = "/explorer/tx/" + q;
      else if (/^\d+$/.test(q)) location.href = "/explorer/block/" + q;
      else toast("Enter a block number or a 0x-prefixed transaction hash.", "error");
    });
  }

  // ---------------------------------------------------------------- earnings from attribution
  async function loadEarnings() {
    const box = $("[data-earnings]");
    if (!box) return;
    try {
      const res = await fetch("/api/earnings/" + box.dataset.earnings);
      if (res.status === 404 || res.status === 503) { box.innerHTML = "<p class='muted'>The attribution service is not running on this deployment.</p>"; return; }
      const j = await res.json();
      const pre = document.createElement("pre"); pre.className = "log"; pre.textContent = JSON.stringify(j, null, 2);
      box.replaceChildren(pre);
    } catch (_) { box.innerHTML = "<p class='muted'>The attribution service did not answer.</p>"; }
  }


  // ---------------------------------------------------------------- playground (OpenLoRA + attribution)
  const CHAT_WORDS = {
    payment_required: "This model is paid per answer: sign the voucher so your escrow can pay.",
    voucher_exhausted: "Your voucher's cap is used up: send again to sign a new one. Nothing was charged.",
    voucher_expired: "Your voucher expired: send again to sign a new one. Nothing was charged.",
    voucher_closed: "You closed this voucher's channel: send again to sign a new one. Nothing was charged.",
    price_above_voucher: "The model's price rose above what your voucher allows: send again to sign a new one. Nothing was charged.",
    voucher_model_mismatch: "Your voucher is for another model: send again to sign one for this model. Nothing was charged.",
    bad_voucher: "The server could not check your voucher's signature: send again to sign a new one. Nothing was charged.",
    insufficient_escrow: "Your escrow cannot pay for this answer. Deposit OPEN into escrow and send again. Nothing was charged.",
    insufficient_allowance: "This model may not spend enough of your escrow: allow it (under Escrow) and send again. Nothing was charged.",
    model_not_found: "The inference service does not know this model yet; wait a few seconds after publishing and try again.",
    model_not_servable: "This model cannot be served here (another base model, or deactivated).",
    model_inactive: "This model was deactivated by its owner.",
    adapter_not_registered: "This adapter is not published: only the account that trained it may try it. Publish it as a model to serve it to everyone.",
    paid_model_in_mix: "A paid model cannot be mixed with other adapters: chat with it alone.",
    queue_full: "The inference service is busy; try again in a moment.",
    unavailable: "The inference service is not running on this deployment yet.",
  };
  async function chatSession(model) {
    const key = "ol_session:" + ACCOUNT + ":" + model;
    const cached = JSON.parse(sessionStorage.getItem(key) || "null");
    if (cached && cached.expiry > Date.now() / 1000 + 60) return cached.headers;
    const t = await postJson("/api/ui/typed/session", { signer: ACCOUNT, model });
    const sig = await provider().request({ method: "eth_signTypedData_v4", params: [ACCOUNT, JSON.stringify(t.typedData)] });
    const headers = Object.assign({}, t.headers, { "x-ol-signature": sig.replace(/^0x/, "") });
    sessionStorage.setItem(key, JSON.stringify({ expiry: t.expiry, headers }));
    return headers;
  }
  // A voucher is a spending cap the payer signs once for the server's attributor (default 1
  // OPEN for one model, a day): kept for the tab's life, replaced when the server says it is used
  // up, expired or closed.
  const VOUCHER_CODES = ["voucher_exhausted", "voucher_expired", "voucher_closed", "price_above_voucher", "voucher_model_mismatch", "bad_voucher"];
  function voucherKey(model) { return "ol_voucher:" + ACCOUNT + ":" + model; }
  async function chatVoucher(model) {
    const key = voucherKey(model);
    const cached = JSON.parse(sessionStorage.getItem(key) || "null");
    if (cached && cached.expiry > Date.now() / 1000 + 60) return cached.headers;
    const q = new URLSearchParams({ payer: ACCOUNT, model });
    const r = await fetch("/api/vouchers/typed-data?" + q);
    const t = await r.json();
    if (!r.ok) throw Object.assign(new Error(t.error ? t.error.message : "The attribution service did not answer."), { plain: true });
    const sig = await provider().request({ method: "eth_signTypedData_v4", params: [ACCOUNT, JSON.stringify(t.typedData)] });
    const headers = Object.assign({}, t.headers, { "x-ol-signature": sig.replace(/^0x/, "") });
    sessionStorage.setItem(key, JSON.stringify({ expiry: Number(t.voucher.expiry), headers }));
    return headers;
  }
  function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; }
  async function renderAttribution(box, att) {
    box.replaceChildren(el("strong", null, "Attribution"));
    if (!att) { box.appendChild(el("p", "muted", "No attribution for this answer (the model is free or the service is off).")); return; }
    if (att.error) { box.appendChild(el("p", "error", "Attribution failed: " + att.error)); return; }
    if (att.pending) { box.appendChild(el("p", "muted", "Attribution is being computed…")); }
    try {
      const c = await postJson("/api/ui/credits", att);
      const p = el("p", "muted", "Fee " + c.fee + " OPEN · split treasury " + c.split.treasuryBps / 100 + "% / model owner " + c.split.modelOwnerBps / 100 + "% / data contributors " + c.split.contributorsBps / 100 + "%");
      box.appendChild(p);
      if (!c.credits.length) box.appendChild(el("p", "muted", "No contribution matched this answer."));
      else {
        const t = el("table"); t.dataset.testid = "attribution";
        t.innerHTML = "<thead><tr><th scope='col'>Contribution</th><th scope='col'>Contributor</th><th scope='col'>Weight</th><th scope='col'>Earns</th></tr></thead>";
        const tb = el("tbody");
        for (const x of c.credits) {
          const tr = el("tr");
          tr.append(el("td", null, "#" + x.contribution + " (Datanet " + x.datanet + " v" + x.version + ")"), el("td", "contributor", x.contributor), el("td", null, x.weightPercent.toFixed(1) + "%"), el("td", null, x.earned + " OPEN"));
          tb.appendChild(tr);
        }
        t.appendChild(tb); const wrap = el("div", "scroll"); wrap.appendChild(t); box.appendChild(wrap);
      }
    } catch (e) { box.appendChild(el("p", "error", e.message)); }
    if (att.recordId) {
      const row = el("p");
      const a = el("a", null, "Record"); a.href = "/api/attribution/" + att.recordId; a.target = "_blank";
      const v = el("button", null, "Verify"); v.type = "button";
      const out = el("span", "status"); out.setAttribute("role", "status");
      v.addEventListener("click", async () => {
        try {
          say(out, "Checking…", "busy");
          const r = await fetch("/api/attribution/" + att.recordId);
          const j = await r.json();
          if (!r.ok) throw Object.assign(new Error(j.error ? j.error.message : "no record"), { plain: true });
          if (!j.batch) { say(out, "Recorded, not yet settled on chain: it will be in the next settlement batch. Verify again shortly.", "busy"); return; }
          const res = await postJson("/api/ui/verify", { batchId: j.batch.batchId, leaf: j.batch.leaf, proof: j.batch.proof });
          const finalAt = j.settlement && j.settlement.finalAt;
          const window = !finalAt ? "" : finalAt * 1000 > Date.now()
            ? " Its credits are pending and anyone may challenge it until " + new Date(finalAt * 1000).toLocaleString() + "."
            : " Its challenge window has ended: its credits are final.";
          say(out, res.included ? "Verified: the record is in settlement batch " + j.batch.batchId + " on chain." + window : "NOT verified: the record is not in the on-chain batch.", res.included ? "ok" : "error");
        } catch (e) { say(out, e.message, "error"); }
      });
      row.append(a, document.createTextNode(" "), v, document.createTextNode(" "), out);
      box.appendChild(row);
    }
  }
  function bindChat() {
    const form = $("form[data-chat]");
    if (!form) return;
    const log = $("[data-chat-log]");
    const history = [];
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const status = $(".status", form);
      const radio = $("input[data-model-radio]:checked");
      if (!radio) { say(status, "Choose a model first.", "error"); return; }
      const model = "model-" + radio.value;
      const text = form.elements.prompt.value.trim();
      if (!text) { say(status, "Type a message first.", "error"); return; }
      const btn = $("button", form); btn.disabled = true;
      try {
        say(status, "Signing the voucher…", "busy");
        const headers = await chatVoucher(model);
        say(status, "Thinking…", "busy");
        const res = await fetch("/v1/chat/completions", {
          method: "POST",
          headers: Object.assign({ "content-type": "application/json" }, headers),
          body: JSON.stringify({ model, messages: history.concat([{ role: "user", content: text }]), stream: true, max_tokens: 48, temperature: 0 }),
        });
        if (!res.ok) {
          let j = null; try { j = await res.json(); } catch (_) { /* not JSON */ }
          const code = j && j.error && (j.error.code || j.error.type);
          if (VOUCHER_CODES.includes(code)) sessionStorage.removeItem(voucherKey(model));
          throw Object.assign(new Error(CHAT_WORDS[code] || (j && j.error ? j.error.message : "The inference service answered " + res.status + ".")), { plain: true });
        }
        history.push({ role: "user", content: text });
        log.appendChild(el("div", "msg user", text));
        const msg = el("div", "msg assistant"); const body = el("div", "answer", ""); const att = el("div", "attribution");
        msg.append(body, att); log.appendChild(msg);
        form.elements.prompt.value = "";
        const reader = res.body.getReader(); const dec = new TextDecoder(); let buf = ""; let attribution = null; let answer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, i).trim(); buf = buf.slice(i + 1);
            if (!line.startsWith("data:")) continue;
            const data = line.slice(5).trim();
            if (data === "[DONE]") continue;
            let j; try { j = JSON.parse(data); } catch (_) { continue; }
            if (j.error) throw Object.assign(new Error(j.error.message), { plain: true });
            const d = j.choices && j.choices[0] && j.choices[0].delta;
            if (d && d.content) { answer += d.content; body.textContent = answer; log.scrollTop = log.scrollHeight; }
            if (j.attribution !== undefined && j.attribution !== null) attribution = j.attribution;
          }
        }
        history.push({ role: "assistant", content: answer });
        say(status, "", "");
        await renderAttribution(att, attribution);
      } catch (e) {
        say(status, e.plain ? e.message : await explain(e), "error");
      } finally { btn.disabled = false; }
    });
  }

  // ---------------------------------------------------------------- ModelFactory (training jobs)
  function checkKnobs(form) {
    for (const input of $$("input[data-min]", form)) {
      const label = $("label[for='" + input.id + "']", form).textContent;
      const v = Number(input.value);
      if (input.value.trim() === "" && input.dataset.default !== undefined) continue;
      if (input.value.trim() === "" || !Number.isFinite(v)) return label + " must be a number.";
      if (input.dataset.int !== undefined && !Number.isInteger(v)) return label + " must be a whole number.";
      if (v < Number(input.dataset.min) || v > Number(input.dataset.max)) return label + " must be between " + input.dataset.min + " and " + input.dataset.max + ".";
    }
    return null;
  }
  function drawLoss(svg, points) {
    if (!points.length) return;
    const W = 400, H = 160, P = 24;
    const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-9);
    const pts = points.map(([x, y]) => (P + (x - x0) / (x1 - x0) * (W - 2 * P)).toFixed(1) + "," + (H - P - (y - y0) / (y1 - y0) * (H - 2 * P)).toFixed(1)).join(" ");
    svg.innerHTML = "<polyline points='" + pts + "'/><text x='" + P + "' y='12'>loss " + y1.toFixed(3) + "</text><text x='" + P + "' y='" + (H - 6) + "'>" + y0.toFixed(3) + " · step " + x1 + "</text>";
  }
  // A request to the jobs API signed in the DatanetRequest scheme over keccak-256 of `body`.
  async function signedJobRequest(url, action, datanetId, body, hashed, method) {
    const hr = await fetch("/api/ui/hash", { method: "POST", body: hashed === undefined ? body : hashed });
    const h = await hr.json();
    if (!hr.ok) throw Object.assign(new Error(h.error.message), { plain: true });
    const t = await postJson("/api/ui/typed/request", { signer: ACCOUNT, datanetId, contentHash: h.contentHash, action, service: "jobs" });
    const sig = await provider().request({ method: "eth_signTypedData_v4", params: [ACCOUNT, JSON.stringify(t.typedData)] });
    const headers = Object.assign({ "content-type": "application/json" }, t.headers, { "x-ol-signature": sig.replace(/^0x/, "") });
    delete headers["x-ol-content-hash"];
    const res = method === "GET" ? await fetch(url, { headers }) : await fetch(url, { method: "POST", headers, body });
    let j = null; try { j = await res.json(); } catch (_) { /* not JSON */ }
    if (!res.ok) {
      const msg = res.status === 503 ? "The training service is not running on this deployment yet." : (j && j.error ? j.error.message : "The training service answered " + res.status + ".");
      throw Object.assign(new Error(msg), { plain: true, status: res.status });
    }
    return j;
  }
  function openToWei(text) {
    const m = /^\s*(\d+)(?:\.(\d{0,18}))?\s*$/.exec(text || "");
    if (!m) return null;
    return BigInt(m[1]) * 10n ** 18n + BigInt((m[2] || "").padEnd(18, "0") || "0");
  }
  async function loadBaseModels() {
    const sel = $("#base");
    if (!sel) return;
    try {
      const r = await fetch("/api/jobs/base-models");
      if (!r.ok) return;
      const j = await r.json();
      if (!j.baseModels || !j.baseModels.length) return;
      sel.replaceChildren(...j.baseModels.map((b) => { const o = el("option", null, b.label || b.id); o.value = b.id; if (b.toyWorld) o.dataset.toyWorld = ""; return o; }));
    } catch (_) { /* the placeholder stays */ }
  }
  // The knobs start at the training service's defaults (TrainConfig::default(), the
  // recommended recipe): one definition, read from GET /api/jobs/defaults; a knob the user
  // has typed into is left alone, and an empty knob is left out of the request (so the
  // service applies the same default).
  async function loadTrainDefaults() {
    const form = $("form[data-train]");
    if (!form) return;
    const inputs = $$("input[data-default]", form);
    for (const input of inputs) input.addEventListener("input", () => { input.dataset.touched = ""; });
    try {
      const r = await fetch("/api/jobs/defaults");
      if (!r.ok) return;
      const j = await r.json();
      for (const input of inputs) {
        const v = j.config && j.config[input.name];
        if (typeof v === "number" && input.value === "" && input.dataset.touched === undefined) input.value = String(v);
      }
    } catch (_) { /* empty knobs get the service's defaults */ }
  }
  function bindTraining() {
    const form = $("form[data-train]");
    if (!form) return;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const status = $(".status", form);
      const bad = checkKnobs(form);
      if (bad) { say(status, bad + " Nothing was started.", "error"); return; }
      const dv = form.elements.datanetVersion;
      if (!dv.value) { say(status, "Choose a published Datanet version.", "error"); return; }
      if (dv.selectedOptions[0].dataset.unlicensed !== undefined) { say(status, "You need a licence for this Datanet before training on it: buy one on the Datanet's page. Nothing was started.", "error"); return; }
      const [datanetId, version] = dv.value.split(":").map(Number);
      const a = formArgs(form);
      if (!a.baseModel) { say(status, "The training service lists no base model yet; wait until it is ready.", "error"); return; }
      const config = {};
      for (const k of ["epochs", "learningRate", "rank", "alpha", "batchSize"]) if (String(a[k] ?? "").trim() !== "") config[k] = Number(a[k]);
      const btn = $("button", form); btn.disabled = true;
      try {
        say(status, "Sign the training request…", "busy");
        const body = JSON.stringify({ baseModel: a.baseModel, datanetId, version, config });
        const job = await signedJobRequest("/api/jobs", "create_job", datanetId, body);
        say(status, "Started " + job.id + "." + (job.warning ? " Warning: " + job.warning : ""), job.warning ? "error" : "ok");
        watchJob(job);
        loadJobs();
      } catch (e) {
        say(status, e.plain ? e.message : await explain(e), "error");
      } finally { btn.disabled = false; }
    });
  }
  // Chat with a finished job's adapter by its content hash: OpenLoRA loads it from the models
  // store; before it is published only its trainer may try it (a signed session), free and
  // without an attribution record.
  async function tryAdapter(form) {
    const st = $(".status", form), log = $("[data-try-log]", form);
    const text = form.elements.prompt.value.trim();
    if (!text) { say(st, "Type a message first.", "error"); return; }
    const btn = $("button", form); btn.disabled = true;
    try {
      if (!form.dataset.model) {
        // An unpublished adapter's hash is shown to its trainer only: a signed read of the job.
        say(st, "Sign to read your adapter's hash…", "busy");
        const j = await signedJobRequest("/api/jobs/" + form.dataset.job, "show_job", Number(form.dataset.datanet), "", form.dataset.job, "GET");
        if (!j.result || !j.result.adapterHash) throw new Error("This job has no adapter.");
        form.dataset.model = j.result.adapterHash;
      }
      say(st, "Signing the session (you trained this adapter)…", "busy");
      const session = await chatSession(form.dataset.model);
      say(st, "Thinking…", "busy");
      const res = await fetch("/v1/chat/completions", {
        method: "POST", headers: Object.assign({ "content-type": "application/json" }, session),
        body: JSON.stringify({ model: form.dataset.model, messages: [{ role: "user", content: text }], max_tokens: 48, temperature: 0 }),
      });
      let j = null; try { j = await res.json(); } catch (_) { /* not JSON */ }
      if (!res.ok || !j || !j.choices) {
        const code = j && j.error && (j.error.code || j.error.type);
        throw new Error(CHAT_WORDS[code] || (j && j.error ? j.error.message : "The inference service answered " + res.status + "."));
      }
      log.append(el("div", "msg user", text), el("div", "msg assistant", j.choices[0].message.content || "(an empty answer)"));
      form.elements.prompt.value = "";
      say(st, "", "");
    } catch (e) { say(st, e.message, "error"); } finally { btn.disabled = false; }
  }
  function watchJob(job) {
    const id = job.id;
    const panel = $("[data-job-panel]"); panel.hidden = false;
    $("[data-job-id]", panel).textContent = id;
    const log = $("[data-job-log]", panel), svg = $("[data-loss-chart]", panel), bar = $("[data-job-progress]", panel), state = $("[data-job-state]", panel);
    const jstatus = $("[data-job-status]", panel), pub = $("form[data-publish-model]", panel), tryForm = $("form[data-try]", panel);
    const points = []; log.textContent = ""; svg.innerHTML = ""; bar.value = 0; pub.hidden = true; tryForm.hidden = true;
    delete tryForm.dataset.model;
    $("[data-try-log]", tryForm).replaceChildren();
    const line = (t) => { log.textContent += t + "\n"; log.scrollTop = log.scrollHeight; };
    const fitBox = $("[data-base-fit]", panel);
    const setJob = (j) => {
      if (!j) return;
      // The base model's score on this data, taken when the job was created.
      const fit = j.baseFit;
      fitBox.hidden = !fit || fit.verdict === "fits";
      if (fit) fitBox.textContent = "Warning: " + fit.message;
      state.textContent = "· " + j.status; panel.dataset.state = j.status;
      $("[data-job-cancel]", panel).hidden = j.status !== "queued" && j.status !== "running";
      if (j.status === "succeeded") {
        bar.value = 100;
        if (j.metrics && !panel.dataset.evaluated) panel.dataset.evaluated = "1", line("validation loss: base " + Number(j.metrics.baseValLoss).toFixed(4) + " → fine-tuned " + Number(j.metrics.finalValLoss).toFixed(4) + (j.reproduction && j.reproduction.prompts ? "; greedy answers reproduce " + j.reproduction.reproduced + " of " + j.reproduction.prompts + " training prompts" : ""));
        if (j.published) say(jstatus, "Published as model " + j.published.modelId + ".", "ok"); else pub.hidden = false;
        if (j.result) {
          tryForm.dataset.job = j.id; tryForm.dataset.datanet = j.datanetId;
          if (j.result.adapterHash) tryForm.dataset.model = j.result.adapterHash;
          tryForm.hidden = false;
        }
      }
      if (j.status === "failed" && j.error) say(jstatus, "Training failed: " + j.error.message, "error");
      if (j.status === "cancelled") say(jstatus, "Cancelled; nothing was stored.", "ok");
    };
    delete panel.dataset.evaluated;
    setJob(job);
    if (watchJob.es) watchJob.es.close();
    const es = new EventSource("/api/jobs/" + id + "/events");
    watchJob.es = es;
    const parse = (m) => { try { return JSON.parse(m.data); } catch (_) { return {}; } };
    es.addEventListener("status", (m) => setJob(parse(m).job));
    es.addEventListener("log", (m) => line(parse(m).message || ""));
    es.addEventListener("checkpoint", (m) => line("checkpoint at step " + parse(m).step));
    es.addEventListener("epoch", (m) => { const j = parse(m); line("epoch " + j.epoch + ": train loss " + Number(j.trainLoss).toFixed(4) + (j.valLoss != null ? ", validation loss " + Number(j.valLoss).toFixed(4) : "")); });
    es.addEventListener("progress", (m) => {
      const j = parse(m);
      points.push([j.step, j.loss]); drawLoss(svg, points);
      bar.value = j.totalSteps ? Math.round(100 * j.step / j.totalSteps) : 0;
      state.textContent = "· running, step " + j.step + " / " + j.totalSteps + " · " + Math.round(j.etaSecs) + " s left";
    });
    for (const end of ["done", "failed", "cancelled"]) es.addEventListener(end, (m) => { setJob(parse(m).job); es.close(); loadJobs(); });
    // The stream does not replay missed events: on every (re)connection, and while a cancel
    // is pending, read the job itself so its end is shown even if its event was missed.
    const terminal = (j) => j && ["succeeded", "failed", "cancelled"].includes(j.status);
    const refresh = async () => {
      try {
        const r = await fetch("/api/jobs/" + id);
        if (!r.ok) return null;
        const j = await r.json();
        setJob(j);
        if (terminal(j)) { es.close(); loadJobs(); }
        return j;
      } catch (_) { return null; }
    };
    es.addEventListener("open", refresh);
    es.onerror = () => { if (es.readyState === EventSource.CLOSED) line("(event stream closed)"); };
    $("[data-job-cancel]", panel).onclick = async () => {
      try {
        say(jstatus, "Cancelling…", "busy");
        await signedJobRequest("/api/jobs/" + id + "/cancel", "cancel_job", job.datanetId, "", id);
        say(jstatus, "Cancelling after the current step…", "busy");
        for (let i = 0; i < 600 && !terminal(await refresh()); i++) await sleep(1000);
      } catch (e) { say(jstatus, e.plain ? e.message : await explain(e), "error"); }
    };
    tryForm.onsubmit = (ev) => { ev.preventDefault(); tryAdapter(tryForm); };
    pub.onsubmit = async (ev) => {
      ev.preventDefault();
      const st = $(".status", pub);
      const wei = openToWei(pub.elements.price.value);
      if (wei === null) { say(st, "The price must be an amount of OPEN, like 0.001.", "error"); return; }
      try {
        say(st, "Sign the publish request…", "busy");
        const base = { pricePer1kTokens: "0x" + wei.toString(16), metadataURI: "ModelFactory " + id };
        const prep = await signedJobRequest("/api/jobs/" + id + "/publish", "publish_job", job.datanetId, JSON.stringify(base));
        let modelId = null, hash;
        if (getCookie("ol_wallet") === "injected") {
          say(st, "Confirm the registration in your wallet…", "busy");
          hash = await provider().request({ method: "eth_sendTransaction", params: [{ from: ACCOUNT, to: prep.transaction.to, data: prep.transaction.data }] });
          const r = await waitReceipt(hash, st);
          if (r.status !== "0x1") throw new Error("The registration was included but failed.");
        } else {
          say(st, "Signing the registration…", "busy");
          const raw = await provider().request({ method: "eth_signTransaction", params: [{ from: ACCOUNT, to: prep.transaction.to, data: prep.transaction.data }] });
          const done = await signedJobRequest("/api/jobs/" + id + "/publish", "publish_job", job.datanetId, JSON.stringify(Object.assign({ signedTransaction: raw }, base)));
          modelId = done.modelId; hash = done.txHash;
        }
        st.textContent = "";
        say(st, "Published" + (modelId != null ? " as model " + modelId : "") + ". ", "ok");
        const a = el("a", null, "Chat with it"); a.href = "/models"; st.appendChild(a);
      } catch (e) { say(st, e.plain ? e.message : await explain(e), "error"); }
    };
  }
  async function loadJobs() {
    const box = $("[data-jobs]");
    if (!box) return;
    try {
      const r = await fetch("/api/jobs?owner=" + ACCOUNT);
      if (!r.ok) { box.innerHTML = "<p class='muted'>The training service is not running on this deployment yet.</p>"; return; }
      const j = await r.json();
      const list = j.jobs || [];
      if (!list.length) { box.replaceChildren(el("p", null, "No jobs yet.")); return; }
      const ul = el("ul", "list");
      for (const job of list.slice().reverse()) {
        const li = el("li");
        const b = el("button", null, "Show"); b.type = "button"; b.addEventListener("click", () => watchJob(job));
        li.append(document.createTextNode(job.id + " · " + job.status + " · Datanet " + job.datanetId + " v" + job.version + (job.published ? " · model " + job.published.modelId : "") + " "), b);
        ul.appendChild(li);
      }
      box.replaceChildren(ul);
    } catch (_) { box.innerHTML = "<p class='muted'>The training service did not answer.</p>"; }
  }

  // unix times rendered by the server, shown in the reader's local time
  function localTimes() {
    for (const t of document.querySelectorAll("time[data-unix]")) {
      const d = new Date(Number(t.dataset.unix) * 1000);
      t.dateTime = d.toISOString();
      t.textContent = d.toLocaleString();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    localTimes(); bindAccount(); bindActionForms(); bindUploads(); bindAdvance(); bindExplorer(); loadEarnings();
    bindChat(); bindTraining(); loadJobs(); loadBaseModels(); loadTrainDefaults();
    if (window.OL_PAGE_INIT) window.OL_PAGE_INIT();
  });
})();
