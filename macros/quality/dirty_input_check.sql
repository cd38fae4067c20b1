{#- One row of the data_quality mart: how many rows of `relation` meet `condition` (the dirt this
    check counts), out of how many, and the share of rows beyond which the pipeline, not the input,
    must be broken (`max_affected_rate`). -#}
{% macro dirty_input_check(check_name, checked_model, relation, condition, max_affected_rate, description) -%}
    select
        '{{ check_name }}' as check_name,
        '{{ checked_model }}' as checked_model,
        {{ dbt.string_literal(description) }} as description,
        cast(coalesce(sum(case when {{ condition }} then 1 else 0 end), 0) as bigint) as affected_rows,
        cast(count(*) as bigint) as checked_rows,
        cast({{ max_affected_rate }} as double) as max_affected_rate
    from {{ relation }}
{%- endmacro %}

{#- The row's `unparseable_fields` names `field`. -#}
{% macro flags_field(field) -%}
    {{ dbt.position("', " ~ field ~ ", '", dbt.concat(["', '", "unparseable_fields", "', '"])) }} > 0
{%- endmacro %}
