{#- A post's key from its raw text: the integer it holds, null if none fits bigint. Staging's choice
    of the latest copy (`latest_copy_per_post`) keys on this same expression. -#}
{% macro post_key(raw_column) -%}
    {{ try_cast_as(raw_column, 'bigint') }}
{%- endmacro %}
