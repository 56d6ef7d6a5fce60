"""The canonical schema and what is derived from it."""
import pyarrow as pa
import pytest
from pydantic import ValidationError

from core import schema


def test_arrow_schema_has_every_field_in_order():
    arrow = schema.arrow_schema()
    assert arrow.names == list(schema.COLUMNS)
    assert arrow.field("diagnoses").type == pa.list_(pa.string())
    assert not arrow.field("patient_id").nullable


def test_template_excludes_derived_columns_and_example_is_complete():
    columns = schema.template_columns()
    assert "encounter_seq" not in columns and "eligible" not in columns
    row = schema.template_example_row()
    assert list(row) == columns
    assert row["diagnoses"] == "428.0;250.02;401.9"


def test_openapi_example_validates():
    example = schema.EncounterIn.model_json_schema()["examples"][0]
    encounter = schema.EncounterIn.model_validate(example)
    assert encounter.diagnoses[0] == "428.0"


@pytest.mark.parametrize("change, field", [
    ({"length_of_stay_days": -1}, "length_of_stay_days"),
    ({"sex": "X"}, "sex"),
    ({"diagnoses": []}, "diagnoses"),
    ({"num_medications": "many"}, "num_medications"),
])
def test_invalid_values_name_the_field(change, field):
    example = dict(schema.EncounterIn.model_json_schema()["examples"][0]) | change
    with pytest.raises(ValidationError) as error:
        schema.EncounterIn.model_validate(example)
    assert field in str(error.value)


def test_json_schema_documents_the_limits_the_rules_enforce():
    properties = schema.EncounterIn.model_json_schema()["properties"]
    assert properties["patient_id"]["maxLength"] == 64 and properties["patient_id"]["minLength"] == 1
    assert properties["diagnoses"]["items"]["maxLength"] == 16 and properties["diagnoses"]["maxItems"] == 50
    assert properties["age_years"]["anyOf"][0] == {"type": "number", "minimum": 0, "maximum": 120}
    assert properties["sex"]["enum"] == ["Female", "Male"]
    assert properties["admit_time"]["anyOf"][0] == {"type": "string", "format": "date-time"}


def test_row_rules_name_the_field_they_blame():
    example = dict(schema.EncounterIn.model_json_schema()["examples"][0]) | {"age_band": "[0-10)"}
    with pytest.raises(ValidationError) as error:
        schema.EncounterIn.model_validate(example)
    problem = error.value.errors()[0]
    assert problem["type"] == "row_rule" and problem["ctx"] == {"field": "age_band"}
    assert problem["msg"] == "must include age_years"
