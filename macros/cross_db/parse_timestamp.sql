{#- A timestamp from either serialization seen in the wild (2020-08-28 03:52:47 or
    2020-08-28T03:52:47); anything else becomes null rather than a guess. -#}
{% macro parse_timestamp(expression) -%}
    {{ return(adapter.dispatch('parse_timestamp', 'pinpipe')(expression)) }}
{%- endmacro %}

{% macro default__parse_timestamp(expression) -%}
    case
        when {{ matches_pattern(expression, '^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}$') }}
            then try_cast(replace({{ expression }}, 'T', ' ') as timestamp)
    end
{%- endmacro %}

{% macro duckdb__parse_timestamp(expression) -%}
    coalesce(
        try_strptime({{ expression }}, '%Y-%m-%d %H:%M:%S'),
        try_strptime({{ expression }}, '%Y-%m-%dT%H:%M:%S')
    )
{%- endmacro %}

{% macro spark__parse_timestamp(expression) -%}
    coalesce(
        try_to_timestamp({{ expression }}, 'yyyy-MM-dd HH:mm:ss'),
        try_to_timestamp({{ expression }}, "yyyy-MM-dd'T'HH:mm:ss")
    )
{%- endmacro %}
