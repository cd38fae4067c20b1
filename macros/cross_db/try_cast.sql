{#- A cast that yields null instead of failing when the value does not fit the type (a key beyond
    bigint, an age beyond integer): one odd value must never stop a build. -#}
{% macro try_cast_as(expression, type) -%}
    {{ return(adapter.dispatch('try_cast_as', 'pinpipe')(expression, type)) }}
{%- endmacro %}

{% macro default__try_cast_as(expression, type) -%}
    try_cast({{ expression }} as {{ type }})
{%- endmacro %}
