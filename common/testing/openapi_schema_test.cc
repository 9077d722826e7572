#include "common/testing/openapi_schema.h"

#include <cmath>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "common/base/posix_file.h"
#include "common/testing/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace snapledger {
namespace {

using nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;

// A small document in the shape of Qdrant's: named schemas, Option<T> spelled as
// anyOf [T, {nullable: true}], one operation with a request body.
OpenApiDocument SmallDocument() {
  return OpenApiDocument(json::parse(R"({
    "openapi": "3.0.1",
    "paths": {
      "/things/{name}": {
        "put": {
          "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
          "responses": {"200": {"content": {"application/json": {"schema": {"type": "boolean"}}}}}
        },
        "get": {"responses": {}}
      }
    },
    "components": {"schemas": {
      "Thing": {
        "type": "object",
        "required": ["id", "kind"],
        "properties": {
          "id": {"type": "integer", "format": "uint64", "minimum": 0},
          "kind": {"$ref": "#/components/schemas/Kind"},
          "size": {"type": "integer", "format": "uint32", "minimum": 1, "nullable": true},
          "weight": {"type": "number", "format": "float"},
          "name": {"type": "string", "minLength": 2},
          "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
          "parent": {"anyOf": [{"$ref": "#/components/schemas/Thing"}, {"nullable": true}]},
          "meta": {"type": "object", "additionalProperties": {"type": "integer"}},
          "uuid": {"type": "string", "format": "uuid"}
        },
        "additionalProperties": false
      },
      "Kind": {"type": "string", "enum": ["small", "large"]},
      "Id": {"anyOf": [{"type": "integer", "format": "uint64"}, {"type": "string", "format": "uuid"}]},
      "Shape": {"oneOf": [
        {"type": "object", "required": ["r"], "properties": {"r": {"type": "number"}}},
        {"type": "object", "required": ["w"], "properties": {"w": {"type": "number"}}}
      ]},
      "Both": {"allOf": [
        {"type": "object", "required": ["a"]},
        {"type": "object", "required": ["b"]}
      ]},
      "Signed": {"type": "integer", "format": "int64"},
      "Dangling": {"$ref": "#/components/schemas/Nope"},
      "Patterned": {"type": "string", "pattern": "^a"},
      "Loop": {"anyOf": [{"$ref": "#/components/schemas/Loop"}]}
    }}
  })"));
}

constexpr char kThing[] = "#/components/schemas/Thing";

absl::Status ValidateThing(const char* text) {
  return SmallDocument().Validate(json::parse(text), kThing);
}

TEST(OpenApiSchema, ConformingValueIsAccepted) {
  EXPECT_TRUE(ValidateThing(R"({"id": 7, "kind": "small", "size": null, "weight": 0.5,
      "name": "ab", "tags": ["x"], "parent": {"id": 1, "kind": "large"}, "meta": {"k": 1},
      "uuid": "550e8400-e29b-41d4-a716-446655440000"})")
                  .ok());
  EXPECT_TRUE(ValidateThing(R"({"id": 7, "kind": "small", "parent": null})").ok());
}

TEST(OpenApiSchema, WrongTypeNamesPointerAndSchemaPath) {
  absl::Status s = ValidateThing(R"({"id": "7", "kind": "small"})");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("/id: expected integer, got string"),
                                 HasSubstr("#/components/schemas/Thing/properties/id/type")));
}

TEST(OpenApiSchema, FractionalNumberIsNotAnInteger) {
  EXPECT_THAT(ValidateThing(R"({"id": 1.0, "kind": "small"})").message(),
              HasSubstr("/id: expected integer, got number"));
}

TEST(OpenApiSchema, MissingRequiredPropertyIsRejected) {
  absl::Status s = ValidateThing(R"({"id": 1})");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("(root): required property \"kind\" is missing"),
                                 HasSubstr("Thing/required")));
}

TEST(OpenApiSchema, ValueOutsideEnumIsRejected) {
  absl::Status s = ValidateThing(R"({"id": 1, "kind": "medium"})");
  EXPECT_THAT(s.message(), AllOf(HasSubstr("/kind: expected one of [\"small\",\"large\"]"),
                                 HasSubstr("#/components/schemas/Kind/enum")));
}

TEST(OpenApiSchema, UnknownPropertyIsRejectedWhenAdditionalPropertiesIsFalse) {
  EXPECT_THAT(ValidateThing(R"({"id": 1, "kind": "small", "colour": "red"})").message(),
              HasSubstr("/colour: property \"colour\" is not allowed"));
}

TEST(OpenApiSchema, AdditionalPropertiesSchemaAppliesToEveryExtraMember) {
  EXPECT_THAT(ValidateThing(R"({"id": 1, "kind": "small", "meta": {"a": 1, "b": "x"}})").message(),
              HasSubstr("/meta/b: expected integer, got string"));
}

TEST(OpenApiSchema, NullOnlyWhereNullable) {
  EXPECT_THAT(ValidateThing(R"({"id": null, "kind": "small"})").message(),
              HasSubstr("/id: expected integer, got null"));
  EXPECT_TRUE(ValidateThing(R"({"id": 1, "kind": "small", "size": null})").ok());
}

TEST(OpenApiSchema, BareNullableBranchAcceptsOnlyNull) {
  // anyOf [Thing, {nullable: true}]: a string is neither a Thing nor null.
  absl::Status s = ValidateThing(R"({"id": 1, "kind": "small", "parent": "p"})");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("/parent: matches none of the 2 anyOf branches"),
                                 HasSubstr("expected object, got string"),
                                 HasSubstr("expected null, got string")));
}

TEST(OpenApiSchema, AnyOfReportsTheBranchThatGotFurthest) {
  absl::Status s =
      ValidateThing(R"({"id": 1, "kind": "small", "parent": {"id": 2, "kind": "tiny"}})");
  EXPECT_THAT(s.message(), AllOf(HasSubstr("/parent/kind: expected one of"),
                                 HasSubstr("none of the 2 anyOf branches")));
}

TEST(OpenApiSchema, FormatsCheckTheirRanges) {
  OpenApiDocument doc = SmallDocument();
  EXPECT_THAT(ValidateThing(R"({"id": -1, "kind": "small"})").message(),
              HasSubstr("/id: -1 is out of range for uint64"));
  EXPECT_THAT(ValidateThing(R"({"id": 1, "kind": "small", "size": 4294967296})").message(),
              HasSubstr("/size: 4294967296 is out of range for uint32"));
  EXPECT_THAT(ValidateThing(R"({"id": 1, "kind": "small", "weight": 1e39})").message(),
              HasSubstr("/weight: 1e+39 is out of range for float"));
  EXPECT_THAT(
      doc.Validate(json(std::numeric_limits<uint64_t>::max()), "#/components/schemas/Signed")
          .message(),
      HasSubstr("out of range for int64"));
  EXPECT_TRUE(
      doc.Validate(json(std::numeric_limits<int64_t>::min()), "#/components/schemas/Signed").ok());
  EXPECT_THAT(ValidateThing(R"({"id": 1, "kind": "small", "uuid": "not-a-uuid"})").message(),
              HasSubstr("is not a UUID"));
}

TEST(OpenApiSchema, NonFiniteNumbersAreRejected) {
  json thing = {{"id", 1}, {"kind", "small"}, {"weight", std::nan("")}};
  EXPECT_THAT(SmallDocument().Validate(thing, kThing).message(),
              HasSubstr("/weight: not a finite number"));
}

TEST(OpenApiSchema, MinimumLengthAndItemCountsAreChecked) {
  EXPECT_THAT(ValidateThing(R"({"id": 1, "kind": "small", "size": 0})").message(),
              HasSubstr("/size: 0 is below the minimum 1"));
  EXPECT_THAT(ValidateThing(R"({"id": 1, "kind": "small", "name": "é"})").message(),
              HasSubstr("/name: string of length 1 is shorter than 2"));
  EXPECT_THAT(ValidateThing(R"({"id": 1, "kind": "small", "tags": []})").message(),
              HasSubstr("/tags: array of 0 items, at least 1 required"));
  EXPECT_THAT(ValidateThing(R"({"id": 1, "kind": "small", "tags": ["a", "b", "c"]})").message(),
              HasSubstr("/tags: array of 3 items, at most 2 allowed"));
  EXPECT_THAT(ValidateThing(R"({"id": 1, "kind": "small", "tags": [1]})").message(),
              HasSubstr("/tags/0: expected string, got integer"));
}

TEST(OpenApiSchema, OneOfNeedsExactlyOneBranch) {
  OpenApiDocument doc = SmallDocument();
  constexpr char kShape[] = "#/components/schemas/Shape";
  EXPECT_TRUE(doc.Validate(json::parse(R"({"r": 1})"), kShape).ok());
  EXPECT_THAT(doc.Validate(json::parse(R"({"r": 1, "w": 2})"), kShape).message(),
              HasSubstr("matches 2 oneOf branches (0, 1), exactly one allowed"));
  EXPECT_THAT(doc.Validate(json::parse(R"({"h": 1})"), kShape).message(),
              HasSubstr("matches none of the 2 oneOf branches"));
}

TEST(OpenApiSchema, AllOfNeedsEveryBranch) {
  OpenApiDocument doc = SmallDocument();
  EXPECT_TRUE(doc.Validate(json::parse(R"({"a": 1, "b": 2})"), "#/components/schemas/Both").ok());
  EXPECT_THAT(doc.Validate(json::parse(R"({"a": 1})"), "#/components/schemas/Both").message(),
              AllOf(HasSubstr("required property \"b\" is missing"), HasSubstr("allOf/1")));
}

TEST(OpenApiSchema, UnusableSchemasAreFailedPrecondition) {
  OpenApiDocument doc = SmallDocument();
  absl::Status dangling = doc.Validate(json(1), "#/components/schemas/Dangling");
  EXPECT_EQ(dangling.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(dangling.message(), HasSubstr("dangling reference #/components/schemas/Nope"));
  absl::Status unsupported = doc.Validate(json("abc"), "#/components/schemas/Patterned");
  EXPECT_EQ(unsupported.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(unsupported.message(), HasSubstr("unsupported schema keyword \"pattern\""));
  EXPECT_EQ(doc.Validate(json(1), "#/components/schemas/Loop").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(doc.Validate(json(1), "#/components/schemas/Missing").code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(OpenApiSchema, OperationsAndBodySchemasAreFoundByPathAndMethod) {
  OpenApiDocument doc = SmallDocument();
  EXPECT_TRUE(doc.HasOperation("/things/{name}", "PUT"));
  EXPECT_FALSE(doc.HasOperation("/things/{name}", "delete"));
  EXPECT_FALSE(doc.HasOperation("/thing/{name}", "put"));
  absl::StatusOr<std::string> body = doc.RequestBodySchema("/things/{name}", "put");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_TRUE(doc.Validate(json::parse(R"({"id": 1, "kind": "small"})"), *body).ok());
  EXPECT_EQ(doc.RequestBodySchema("/things/{name}", "get").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(doc.RequestBodySchema("/nothing", "get").status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<std::string> response = doc.ResponseSchema("/things/{name}", "put");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_TRUE(doc.Validate(json(true), *response).ok());
  EXPECT_FALSE(doc.Validate(json(1), *response).ok());
}

TEST(OpenApiSchema, LoadRejectsMissingFilesAndNonOpenApiJson) {
  testing::TempDir dir;
  EXPECT_EQ(OpenApiDocument::Load(dir.path() + "/absent.json").status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/bad.json", "{not json").ok());
  EXPECT_EQ(OpenApiDocument::Load(dir.path() + "/bad.json").status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/swagger.json", R"({"swagger": "2.0"})").ok());
  EXPECT_EQ(OpenApiDocument::Load(dir.path() + "/swagger.json").status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/ok.json", R"({"openapi": "3.0.3"})").ok());
  EXPECT_TRUE(OpenApiDocument::Load(dir.path() + "/ok.json").ok());
}

}  // namespace
}  // namespace snapledger
