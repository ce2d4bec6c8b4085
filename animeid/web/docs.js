// The API docs page: renders /openapi.json without any outside script (works offline).
"use strict";

function schemaText(spec, schema, depth) {
  if (!schema) return "";
  depth = depth || 0;
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    const target = spec.components && spec.components.schemas && spec.components.schemas[name];
    return depth > 2 || !target ? name : schemaText(spec, target, depth + 1);
  }
  if (schema.anyOf || schema.oneOf) return (schema.anyOf || schema.oneOf).map((s) => schemaText(spec, s, depth)).join(" | ");
  if (schema.type === "array") return schemaText(spec, schema.items, depth) + "[]";
  if (schema.type === "object" && schema.properties) {
    return "{" + Object.entries(schema.properties).map(([k, v]) => k + ": " + schemaText(spec, v, depth + 1)).join(", ") + "}";
  }
  if (schema.format === "binary" || schema.contentMediaType) return "file";
  return schema.type || "any";
}

// "text with `code`" -> a <p> with <code> elements (no HTML parsing)
function prose(text, cls) {
  const p = el("p", { class: cls });
  String(text).split("`").forEach((part, i) => p.append(i % 2 ? el("code", { text: part }) : document.createTextNode(part)));
  return p;
}

function renderOp(spec, path, method, op) {
  const card = el("article", { class: "op" });
  card.append(el("h3", {}, el("span", { class: "method " + method, text: method.toUpperCase() }), el("code", { text: path })));
  if (op.summary) card.append(prose(op.summary, "summary"));
  if (op.description) card.append(prose(op.description));
  const rows = [];
  for (const p of op.parameters || []) {
    rows.push([p.name, p.in, schemaText(spec, p.schema), (p.required ? "required. " : "") + (p.description || (p.schema && p.schema.description) || "")]);
  }
  const body = op.requestBody && op.requestBody.content;
  if (body) {
    for (const [type, media] of Object.entries(body)) {
      let schema = media.schema;
      if (schema && schema.$ref) schema = spec.components.schemas[schema.$ref.split("/").pop()];
      const req = new Set((schema && schema.required) || []);
      for (const [k, v] of Object.entries((schema && schema.properties) || {})) {
        rows.push([k, type, schemaText(spec, v), (req.has(k) ? "required. " : "") + (v.description || "")]);
      }
    }
  }
  if (rows.length) {
    card.append(el("table", {}, el("thead", {}, el("tr", {}, ["name", "in", "type", ""].map((h) => el("th", { text: h })))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", { text: c })))))));
  }
  const resp = Object.entries(op.responses || {}).map(([code, r]) => {
    const media = r.content && r.content["application/json"];
    return el("li", {}, el("strong", { text: code }), " " + (r.description || "") +
      (media && media.schema ? ": " + schemaText(spec, media.schema) : ""));
  });
  card.append(el("ul", { class: "responses" }, resp));
  return card;
}

async function setup() {
  try {
    const spec = await api("/openapi.json");
    const box = document.getElementById("docs");
    box.append(el("h2", { text: `${spec.info.title} ${spec.info.version}` }), prose(spec.info.description || ""));
    for (const [path, ops] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(ops)) box.append(renderOp(spec, path, method, op));
    }
  } catch (e) {
    setStatus(e.message, "error");
  }
}

setup();
