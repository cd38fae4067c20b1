{#- The text without its trailing spaces (U+0020 only). DuckDB's plain rtrim also strips other
    white space such as the no-break space that ends many real descriptions; Spark's strips only
    spaces: spelled out here, both engines agree. -#}
{% macro rtrim_spaces(expression) -%}
    {{ return(adapter.dispatch('rtrim_spaces', 'pinpipe')(expression)) }}
{%- endmacro %}

{% macro default__rtrim_spaces(expression) -%}
    rtrim({{ expression }}, ' ')
{%- endmacro %}

{% macro spark__rtrim_spaces(expression) -%}
    rtrim({{ expression }})
{%- endmacro %}
