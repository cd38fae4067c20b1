{#- The loaders' rule for what bronze can key (ingestion/bronze_rows.py), in Spark and Databricks
    SQL (VARIANT: Spark 4, Databricks Runtime 15.3): a JSON object whose key field is a JSON integer
    within bigint. Both macros read two columns: `raw_record`, a record's JSON text (null when it
    could not be read at all), and `record`, `try_parse_json(raw_record)`. Used where Databricks
    writes bronze itself; held equal to the Python rule on local Spark (test_engines.py). -#}

{#- Why a record cannot be keyed, in the loaders' words; null when it can. -#}
{% macro unidentified_reason(table) -%}
    {%- set key = 'index' if bronze_carries(table) == 'pin' else 'ind' -%}
    {%- set integers = "('TINYINT', 'SMALLINT', 'INT', 'BIGINT')" -%}
    case
        when raw_record is null then 'neither JSON nor base64-encoded JSON'
        when record is null then 'not valid JSON'
        when schema_of_variant(record) not like 'OBJECT<%' then concat(
            'not a JSON object but ',
            case
                when schema_of_variant(record) like 'ARRAY<%' then 'list'
                when schema_of_variant(record) = 'STRING' then 'str'
                when schema_of_variant(record) = 'BOOLEAN' then 'bool'
                when schema_of_variant(record) = 'VOID' then 'NoneType'
                when schema_of_variant(record) in {{ integers }} then 'int'
                else 'float'
            end
        )
        when coalesce(schema_of_variant(variant_get(record, '$.{{ key }}')), 'VOID') not in {{ integers }}
            then concat(
                'field ''{{ key }}'' must be an integer key within bigint, got ',
                coalesce({{ value_as_json(key) }}, 'null')
            )
    end
{%- endmacro %}

{#- The payload's fields as the text they arrived as (a string as it is, anything else as its
    JSON), then the fields outside the raw schema as one JSON object, null when there are none. -#}
{% macro payload_as_text(table) -%}
    {%- set fields = payload_fields(bronze_carries(table)) -%}
    {%- for field in fields %}
    case
        when schema_of_variant(variant_get(record, '$.{{ field }}')) = 'STRING'
            then variant_get(record, '$.{{ field }}', 'string')
        when not is_variant_null(variant_get(record, '$.{{ field }}'))
            then {{ value_as_json(field) }}
    end as {{ adapter.quote(field) }},
    {%- endfor %}
    nullif(
        to_json(
            map_filter(
                from_json(raw_record, 'map<string, string>'),
                (name, value) -> not array_contains(array({% for field in fields %}'{{ field }}'{{ ', ' if not loop.last }}{% endfor %}), name)
            )
        ),
        '{}'
    ) as _unknown_fields
{%- endmacro %}

{#- A field's value as JSON text, as Python's json.dumps writes it: a string quoted, a number as
    it was written (VARIANT would write 5.0 as 5); null when the field is missing or null. -#}
{% macro value_as_json(field) -%}
    case
        when schema_of_variant(variant_get(record, '$.{{ field }}')) = 'STRING'
            then to_json(variant_get(record, '$.{{ field }}'))
        else get_json_object(raw_record, '$.{{ field }}')
    end
{%- endmacro %}

{#- The raw fields of a table, in the order clients send them: the columns of its `bronze` source
    that are not lineage (those start with an underscore). -#}
{% macro payload_fields(carried) -%}
    {%- set fields = [] -%}
    {%- for source in graph.get('sources', {}).values() if source.source_name == 'bronze' and source.name == carried -%}
        {%- for column in source.columns.values() if not column.name.startswith('_') -%}
            {%- do fields.append(column.name) -%}
        {%- endfor -%}
    {%- endfor -%}
    {{ return(fields) }}
{%- endmacro %}
