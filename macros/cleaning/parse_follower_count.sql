{#- Follower counts arrive as text: "942", "124k" (thousands), "2M" (millions). Anything else
    (placeholders are nulled before this) becomes null and is flagged by the staging model. -#}
{% macro parse_follower_count(column) -%}
    case
        when {{ matches_pattern(column, '^[0-9]+$') }}
            then cast({{ column }} as bigint)
        when {{ matches_pattern(column, '^[0-9]+k$') }}
            then cast(substr({{ column }}, 1, length({{ column }}) - 1) as bigint) * 1000
        when {{ matches_pattern(column, '^[0-9]+M$') }}
            then cast(substr({{ column }}, 1, length({{ column }}) - 1) as bigint) * 1000000
    end
{%- endmacro %}
