{#- An array literal from column expressions (dbt's array_construct wants a type too; ours lets the
    engine infer it from the elements). -#}
{% macro array_of(expressions) -%}
    {{ return(adapter.dispatch('array_of', 'pinpipe')(expressions)) }}
{%- endmacro %}

{% macro default__array_of(expressions) -%}
    array[{{ expressions | join(', ') }}]
{%- endmacro %}

{% macro spark__array_of(expressions) -%}
    array({{ expressions | join(', ') }})
{%- endmacro %}
