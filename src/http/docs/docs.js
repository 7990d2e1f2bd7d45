// Renders /api/v1/openapi.json: operations by tag (parameters, request body, responses) and
// the component schemas. Plain DOM, no dependencies; text is inserted as text, never as HTML.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function schemaText(schema) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.replace("#/components/schemas/", "");
  if (schema.type === "array") return schemaText(schema.items) + "[]";
  if (schema.oneOf) return schema.oneOf.map(schemaText).join(" | ");
  if (schema.allOf) return schema.allOf.map(schemaText).join(" & ");
  const type = Array.isArray(schema.type) ? schema.type.join(" | ") : (schema.type || "any");
  return schema.format ? `${type} (${schema.format})` : type;
}

function schemaLink(schema) {
  const name = schema && schema.$ref ? schemaText(schema) : null;
  if (!name) {
    const inner = schema && schema.type === "array" && schema.items && schema.items.$ref;
    return inner ? el("span", {}, el("a", { href: "#schema-" + schemaText(schema.items) }, schemaText(schema.items)), "[]")
                 : el("code", {}, schemaText(schema));
  }
  return el("a", { href: "#schema-" + name }, name);
}

function operationId(method, path) {
  return "op-" + method + path.replace(/[^a-zA-Z0-9]+/g, "-");
}

function renderOperation(method, path, op) {
  const section = el("section", { class: "op", id: operationId(method, path) },
    el("h3", {}, el("span", { class: "method " + method }, method), " ", el("code", {}, path)));
  if (op.summary) section.append(el("p", {}, op.summary));
  if (op.description && op.description !== op.summary) section.append(el("p", {}, op.description));
  if (op.security && op.security.length) section.append(el("p", {}, "Requires a bearer access token."));
  const params = op.parameters || [];
  if (params.length) {
    const table = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"),
      el("th", {}, "type"), el("th", {}, "required"), el("th", {}, "description")));
    for (const p of params) {
      table.append(el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in),
        el("td", {}, schemaLink(p.schema)), el("td", {}, p.required ? "yes" : "no"),
        el("td", {}, p.description || "")));
    }
    section.append(el("h4", {}, "Parameters"), table);
  }
  if (op.requestBody) {
    const json = (op.requestBody.content || {})["application/json"] || {};
    section.append(el("h4", {}, "Request body"), el("p", {}, schemaLink(json.schema)));
  }
  const table = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "description"), el("th", {}, "body")));
  for (const [status, res] of Object.entries(op.responses || {})) {
    const json = (res.content || {})["application/json"];
    table.append(el("tr", {}, el("td", {}, status), el("td", {}, res.description || ""),
      el("td", {}, json ? schemaLink(json.schema) : "")));
  }
  section.append(el("h4", {}, "Responses"), table);
  return section;
}

function render(doc) {
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of ["get", "post", "put", "patch", "delete"]) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([method, path, op]);
    }
  }
  const toc = el("div", {});
  const ops = document.getElementById("operations");
  for (const [tag, list] of [...byTag.entries()].sort()) {
    const ul = el("ul", {});
    ops.append(el("h2", { id: "tag-" + tag }, tag));
    for (const [method, path, op] of list) {
      ul.append(el("li", {}, el("a", { href: "#" + operationId(method, path) },
        el("span", { class: "method " + method }, method), " ", path)));
      ops.append(renderOperation(method, path, op));
    }
    toc.append(el("strong", {}, tag), ul);
  }
  toc.append(el("a", { href: "#schemas" }, "Schemas"));
  document.getElementById("toc").replaceChildren(toc);
  const schemas = document.getElementById("schema-list");
  for (const [name, schema] of Object.entries((doc.components || {}).schemas || {}).sort()) {
    schemas.append(el("section", { class: "op", id: "schema-" + name }, el("h3", {}, name),
      el("pre", {}, JSON.stringify(schema, null, 2))));
  }
}

fetch("/api/v1/openapi.json")
  .then((r) => { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
  .then(render)
  .catch((e) => { document.getElementById("error").textContent = "Could not load the document: " + e.message; });
