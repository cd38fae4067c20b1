{#- Names of the raw fields whose text was present (and not a placeholder) but could not be parsed,
    comma-separated; null when every field parsed. `fields` maps each raw field name to the typed
    column parsed from it; the raw text is in `<field>_text`. The row is kept: the data_quality
    mart counts the flagged rows per field. -#}
{% macro unparseable_fields(fields) -%}
    nullif(concat_ws(', ',
        {%- for field, typed in fields.items() %}
        case when {{ field }}_text is not null and {{ typed }} is null then '{{ field }}' end{% if not loop.last %},{% endif %}
        {%- endfor %}
    ), '')
{%- endmacro %}
