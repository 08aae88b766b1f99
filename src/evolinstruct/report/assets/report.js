// The report's only script: the evolution-tree browser, the diversity map's tooltip and legend toggles.
(function () {
  "use strict";

  function h(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children || []) if (child) node.append(child);
    return node;
  }

  const epochLabel = (e) => (e === 0 ? "seed" : "epoch " + e);
  const snippet = (text, n) => {
    const flat = (text || "").replace(/\s+/g, " ").trim();
    return flat.length > n ? flat.slice(0, n - 1) + "…" : flat;
  };
  const fmtScore = (v) => (v === null ? "unparsed" : Number.isInteger(v) ? String(v) : v.toFixed(2));

  // ---------------------------------------------------------------- evolution trees
  function initTrees() {
    const source = document.getElementById("tree-data");
    if (!source) return;
    const data = JSON.parse(source.textContent);
    const nodes = data.nodes;
    const list = document.getElementById("seed-list");
    const search = document.getElementById("seed-search");
    const count = document.getElementById("seed-count");
    const tree = document.getElementById("tree");
    const statusOrder = { kept: 0, eliminated: 1, error: 2 };

    const children = {};
    for (const [id, node] of Object.entries(nodes)) {
      if (node.p && nodes[node.p]) (children[node.p] = children[node.p] || []).push(id);
    }
    for (const ids of Object.values(children)) {
      ids.sort((a, b) => nodes[a].e - nodes[b].e || statusOrder[nodes[a].s] - statusOrder[nodes[b].s]);
    }

    // Search covers every text of a lineage, built once on first use.
    let haystacks = null;
    function lineageText(id) {
      const n = nodes[id];
      let text = [n.i, n.in, n.out, n.o, n.r || ""].join(" ");
      for (const child of children[id] || []) text += " " + lineageText(child);
      return text;
    }

    let activeId = null;
    function renderList() {
      const query = search.value.trim().toLowerCase();
      if (query && !haystacks) {
        haystacks = {};
        for (const seed of data.seeds) haystacks[seed.id] = lineageText(seed.id).toLowerCase();
      }
      list.replaceChildren();
      let shown = 0;
      for (const seed of data.seeds) {
        if (query && !haystacks[seed.id].includes(query)) continue;
        shown += 1;
        const meta = h("span", { class: "seed-meta" }, [
          h("span", { class: "k", text: seed.k + " kept" }), " · ",
          h("span", { class: "x", text: seed.x + " eliminated" }),
        ]);
        const button = h("button", { type: "button", "data-id": seed.id, class: seed.id === activeId ? "active" : "" },
          [seed.t || "(empty)", meta]);
        button.addEventListener("click", () => select(seed.id));
        list.append(h("li", {}, [button]));
      }
      count.textContent = shown + " of " + data.total + " seeds";
    }

    function section(title, text) {
      return [h("h4", { text: title }), h("pre", { text: text })];
    }

    function nodeBody(id) {
      const n = nodes[id];
      const body = h("div", { class: "node-body" });
      const talk = n.h && n.h.length;  // a conversation: its earlier turns, then the last one
      if (talk) {
        body.append(h("h4", { text: "Earlier turns" }));
        const turns = h("ol", { class: "turns" });
        for (const [role, text] of n.h) turns.append(h("li", { class: "turn " + role }, [h("span", { class: "pill", text: role }), h("pre", { text: text || "(empty)" })]));
        body.append(turns);
      }
      body.append(...section(talk ? "User (last turn)" : "Instruction", n.i || "(empty)"));
      if (n.in) body.append(...section("Input", n.in));
      if (n.out) body.append(...section(talk ? "Assistant (last turn)" : "Response", n.out));
      else body.append(h("h4", { text: "Response" }), h("p", { class: "muted", text: n.s === "kept" ? "(empty)" : "none: eliminated before answering" }));
      if (n.r || n.ev) {
        body.append(h("h4", { text: n.s === "error" ? "Error" : "Why it was eliminated" }));
        const dl = h("dl", {}, [h("dt", { text: "reason" }), h("dd", { text: n.r || n.s })]);
        for (const [key, value] of Object.entries(n.ev || {})) {
          dl.append(h("dt", { text: key }), h("dd", { text: typeof value === "string" ? value : JSON.stringify(value) }));
        }
        body.append(dl);
      }
      if (n.sc) {
        body.append(h("h4", { text: "Scores" }));
        const dl = h("dl");
        for (const [key, value] of Object.entries(n.sc)) dl.append(h("dt", { text: key.replace(/_/g, " ") }), h("dd", { text: fmtScore(value) }));
        body.append(dl);
      }
      body.append(h("p", { class: "note", text: "id " + id }));
      return body;
    }

    function nodeItem(id) {
      const n = nodes[id];
      const pills = [
        h("span", { class: "pill", text: epochLabel(n.e) }),
        n.e > 0 ? h("span", { class: "pill", text: n.o }) : null,
        n.h && n.h.length ? h("span", { class: "pill", text: (1 + n.h.filter((t) => t[0] === "user").length) + " turns" }) : null,
        h("span", { class: "pill " + n.s, text: n.s + (n.r ? ": " + n.r : "") }),
      ];
      if (n.sc && n.sc.difficulty !== undefined) pills.push(h("span", { class: "pill score", text: "difficulty " + fmtScore(n.sc.difficulty) }));
      const summary = h("summary", {}, [h("span", { class: "node-head" }, pills), h("span", { class: "node-text", text: snippet(n.i, 200) })]);
      const details = h("details", { class: "node " + n.s, "data-id": id }, [summary]);
      details.addEventListener("toggle", () => {
        // Bodies are built on first open: a big run has thousands of nodes.
        if (details.open && !details.querySelector(".node-body")) details.append(nodeBody(id));
      });
      const item = h("li", {}, [details]);
      const kids = children[id] || [];
      if (kids.length) item.append(h("ul", { class: "tree" }, kids.map(nodeItem)));
      return item;
    }

    function select(id) {
      activeId = id;
      for (const b of list.querySelectorAll("button")) b.classList.toggle("active", b.dataset.id === id);
      tree.replaceChildren(h("ul", { class: "tree root" }, [nodeItem(id)]));
    }

    search.addEventListener("input", renderList);
    renderList();
    if (data.seeds.length) select(data.seeds[0].id);
  }

  // ---------------------------------------------------------------- diversity map
  function initMap() {
    const svg = document.querySelector("svg.scatter");
    if (!svg) return;
    const tip = h("div", { id: "tooltip" });
    document.body.append(tip);
    for (const title of svg.querySelectorAll("circle > title")) title.remove(); // our tooltip replaces the native one
    svg.addEventListener("mousemove", (event) => {
      const dot = event.target.closest("circle");
      if (!dot) { tip.style.display = "none"; return; }
      tip.textContent = dot.dataset.tip;
      tip.style.display = "block";
      const x = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
      tip.style.left = x + "px";
      tip.style.top = event.clientY + 14 + "px";
    });
    svg.addEventListener("mouseleave", () => { tip.style.display = "none"; });
    for (const button of document.querySelectorAll(".legend.toggles button")) {
      button.addEventListener("click", () => {
        const off = button.classList.toggle("off");
        for (const dot of svg.querySelectorAll('circle[data-epoch="' + button.dataset.epoch + '"]')) dot.classList.toggle("hidden", off);
      });
    }
  }

  initTrees();
  initMap();
})();
