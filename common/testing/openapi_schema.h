// OpenApiDocument: checks JSON values against the schemas of an OpenAPI 3.0 document, so the
// request bodies our REST clients build can be checked against a server's published spec
// (Qdrant's, in qdrant_client_test) without the server.
//
// Supported schema keywords (the subset the Qdrant spec uses, plus allOf):
//   $ref                    local references only ("#/components/schemas/Name"); as in
//                           OpenAPI 3.0, keywords beside a $ref are ignored
//   type                    object, array, string, integer, number, boolean. "integer" means a
//                           JSON integer: 1.0 is a number, not an integer (serde-based servers
//                           such as Qdrant reject it too)
//   nullable                null is accepted only where nullable is true (or the schema is
//                           empty, {}). A schema whose only validation keyword is
//                           `nullable: true` accepts null and nothing else: that is how
//                           schemars-generated specs (Qdrant's) spell Option<T>, as
//                           anyOf [T, {nullable: true}]; reading it literally (no type, so
//                           anything goes) would make every such anyOf accept anything
//   properties, required, additionalProperties (true/false or a schema; default true)
//   items, minItems, maxItems, uniqueItems
//   enum, anyOf, oneOf (exactly one branch), allOf
//   minimum, maximum, exclusiveMinimum, exclusiveMaximum (3.0 boolean form)
//   minLength, maxLength    counted in Unicode code points
//   format                  uint, uint8, uint32, uint64, int32, int64: range of the type;
//                           float: finite and within float's range; double: finite; uuid:
//                           8-4-4-4-12 hex digits. Other formats (date-time, uri, ...) are
//                           not checked.
// Annotations (description, default, example, deprecated, title, readOnly, writeOnly,
// externalDocs, xml, discriminator) and x-* extensions are ignored. Any other keyword is an
// error (FailedPrecondition): a schema is never validated more loosely than it says.
//
// Thread safety: const methods may be called concurrently.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace snapledger {

class OpenApiDocument {
 public:
  // `document` is a parsed OpenAPI 3.0 document; only its schemas and paths are read.
  explicit OpenApiDocument(nlohmann::json document) : document_(std::move(document)) {}

  // Reads and parses the document at `path`. NotFound if the file is missing, InvalidArgument
  // if it is not JSON or not an OpenAPI 3.0 document (no "openapi": "3.0.x").
  static absl::StatusOr<OpenApiDocument> Load(const std::string& path);

  const nlohmann::json& document() const { return document_; }

  // Whether the spec has operation `method` (any case: "put", "PUT") on path template
  // `path_template` (spelled as in the spec: "/collections/{collection_name}/points").
  bool HasOperation(std::string_view path_template, std::string_view method) const;

  // JSON pointer (RFC 6901, "#/paths/..." form) of the application/json request body schema
  // of an operation. NotFound naming the part that is missing (path, method, body).
  absl::StatusOr<std::string> RequestBodySchema(std::string_view path_template,
                                                std::string_view method) const;
  // Same for the application/json schema of the response with status `status` ("200").
  absl::StatusOr<std::string> ResponseSchema(std::string_view path_template,
                                             std::string_view method,
                                             std::string_view status = "200") const;

  // Checks `value` against the schema at `schema_pointer` ("#/components/schemas/Filter", or
  // one returned by RequestBodySchema). OK when it conforms. InvalidArgument when it does
  // not: the message names the JSON pointer of the offending part of `value`, what is wrong,
  // and the schema path of the failing keyword, e.g.
  //   "/points/0/id: expected integer, got string (at #/components/schemas/...)".
  // For anyOf/oneOf with no matching branch it reports the branch that got furthest into
  // `value`. FailedPrecondition when the schema itself cannot be used (dangling $ref,
  // unsupported keyword, malformed keyword, recursion too deep).
  absl::Status Validate(const nlohmann::json& value, std::string_view schema_pointer) const;

 private:
  nlohmann::json document_;
};

}  // namespace snapledger
