{#- Names of the fields whose raw text was present (and not a placeholder) but could not be parsed,
    comma-separated; null when every field parsed. `fields` maps each typed column to the raw text
    column it was parsed from. The row is kept: a test counts the flagged rows. -#}
{% macro unparseable_fields(fields) -%}
    nullif(concat_ws(', ',
        {%- for typed, raw in fields.items() %}
        case when {{ raw }} is not null and {{ typed }} is null then '{{ typed }}' end{% if not loop.last %},{% endif %}
        {%- endfor %}
    ), '')
{%- endmacro %}
