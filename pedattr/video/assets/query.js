// The query grammar of pedattr/video/query.py, in JavaScript for index.html: the same parsed
// form (nested arrays), the same error messages, the same matches. Keep the two in step; the
// tests compare them on a set of queries and tracks.
"use strict";
var PedattrQuery = (function () {
  var SPECIAL = "&|!()\"'";
  var QUOTES = "\"'";
  var WHITESPACE = " \t\n\r\f\v";

  function QueryError(message, position) {
    this.message = message;
    this.position = position;
  }

  function describe(token) {
    if (token.kind === "end") return "the end of the query";
    if (token.kind === "name") return "the name '" + token.text + "'";
    return "'" + token.text + "'";
  }

  function tokens(text) {
    var chars = Array.from(text); // code points, as Python counts characters
    var out = [];
    var k = 0;
    while (k < chars.length) {
      var c = chars[k];
      if (WHITESPACE.indexOf(c) >= 0) {
        k += 1;
      } else if ("&|!()".indexOf(c) >= 0) {
        out.push({ kind: c, text: c, position: k + 1 });
        k += 1;
      } else if (QUOTES.indexOf(c) >= 0) {
        var end = chars.indexOf(c, k + 1);
        if (end < 0) throw new QueryError("the quote at character " + (k + 1) + " is not closed", k + 1);
        if (end === k + 1) throw new QueryError("empty name in quotes at character " + (k + 1), k + 1);
        out.push({ kind: "name", text: chars.slice(k + 1, end).join(""), position: k + 1 });
        k = end + 1;
      } else {
        var start = k;
        while (k < chars.length && WHITESPACE.indexOf(chars[k]) < 0 && SPECIAL.indexOf(chars[k]) < 0) k += 1;
        out.push({ kind: "name", text: chars.slice(start, k).join(""), position: start + 1 });
      }
    }
    out.push({ kind: "end", text: "", position: chars.length + 1 });
    return out;
  }

  function Parser(text) {
    this.tokens = tokens(text);
    this.k = 0;
  }
  Parser.prototype.peek = function () { return this.tokens[this.k]; };
  Parser.prototype.take = function () { return this.tokens[this.k++]; };
  Parser.prototype.query = function () {
    var operands = [this.conjunction()];
    while (this.peek().kind === "|") { this.take(); operands.push(this.conjunction()); }
    return operands.length === 1 ? operands[0] : ["or"].concat(operands);
  };
  Parser.prototype.conjunction = function () {
    var operands = [this.negation()];
    while (this.peek().kind === "&") { this.take(); operands.push(this.negation()); }
    return operands.length === 1 ? operands[0] : ["and"].concat(operands);
  };
  Parser.prototype.negation = function () {
    if (this.peek().kind === "!") { this.take(); return ["not", this.negation()]; }
    return this.atom();
  };
  Parser.prototype.atom = function () {
    var token = this.take();
    if (token.kind === "name") return ["name", token.text];
    if (token.kind === "(") {
      var inner = this.query();
      var closing = this.take();
      if (closing.kind !== ")") {
        throw new QueryError("expected ')' to close the '(' at character " + token.position +
          ", found " + describe(closing) + " at character " + closing.position, closing.position);
      }
      return inner;
    }
    throw new QueryError("expected an attribute name, '!' or '(' at character " + token.position +
      ", found " + describe(token), token.position);
  };

  function strip(text) {
    var chars = Array.from(text);
    return chars.filter(function (c) { return WHITESPACE.indexOf(c) < 0; }).length === 0;
  }

  function quote(name) {
    var plain = name.length > 0 && Array.from(name).every(function (c) {
      return WHITESPACE.indexOf(c) < 0 && SPECIAL.indexOf(c) < 0;
    });
    if (plain) return name;
    return name.indexOf('"') >= 0 ? "'" + name + "'" : '"' + name + '"';
  }

  // The parsed form of text; with names, every name in it must be one of them. Throws QueryError.
  function parse(text, names) {
    if (strip(text)) throw new QueryError("the query is empty", 1);
    var parser = new Parser(text);
    var query = parser.query();
    var extra = parser.peek();
    if (extra.kind !== "end") {
      throw new QueryError("expected '&', '|' or the end of the query at character " + extra.position +
        ", found " + describe(extra), extra.position);
    }
    if (names) {
      var known = new Set(names);
      parser.tokens.forEach(function (token) {
        if (token.kind === "name" && !known.has(token.text)) {
          var listed = known.size ? names.map(quote).join(", ") : "none (no tracks)";
          throw new QueryError("unknown attribute '" + token.text + "' at character " + token.position +
            "; the attributes are " + listed, token.position);
        }
      });
    }
    return query;
  }

  function namesIn(query) {
    if (query[0] === "name") return [query[1]];
    var seen = [];
    query.slice(1).forEach(function (q) {
      namesIn(q).forEach(function (n) { if (seen.indexOf(n) < 0) seen.push(n); });
    });
    return seen;
  }

  function confidence(query, probabilities) {
    if (query[0] === "name") return probabilities[query[1]];
    if (query[0] === "not") return 1.0 - confidence(query[1], probabilities);
    var values = query.slice(1).map(function (q) { return confidence(q, probabilities); });
    return query[0] === "and" ? Math.min.apply(null, values) : Math.max.apply(null, values);
  }

  function holds(query, attributes) {
    if (query[0] === "name") return attributes.indexOf(query[1]) >= 0;
    if (query[0] === "not") return !holds(query[1], attributes);
    var operands = query.slice(1);
    return query[0] === "and"
      ? operands.every(function (q) { return holds(q, attributes); })
      : operands.some(function (q) { return holds(q, attributes); });
  }

  function certainty(probabilities) {
    var values = Object.keys(probabilities).map(function (k) { return probabilities[k]; });
    if (!values.length) return 0.0;
    var total = 0.0;
    values.forEach(function (p) { total += Math.max(p, 1.0 - p); });
    return total / values.length;
  }

  // The confidence with which a track matches query (null: it does not); minProb null: the
  // track's yes/no answers decide.
  function matches(query, record, minProb) {
    var probabilities = record.probabilities || {};
    if (query === null) return certainty(probabilities);
    if (!Object.keys(probabilities).length) return null;
    var names = namesIn(query);
    for (var i = 0; i < names.length; i++) {
      if (!Object.prototype.hasOwnProperty.call(probabilities, names[i])) return null;
    }
    var value = confidence(query, probabilities);
    if (minProb === null || minProb === undefined) {
      return holds(query, record.attributes || []) ? value : null;
    }
    return value >= minProb ? value : null;
  }

  return { parse: parse, matches: matches, namesIn: namesIn, quote: quote, QueryError: QueryError };
})();
