{#- One row per day, `date_day`, from start_date up to but not including end_date (both 'YYYY-MM-DD'). -#}
{% macro day_spine(start_date, end_date) -%}
    {{ return(adapter.dispatch('day_spine', 'pinpipe')(start_date, end_date)) }}
{%- endmacro %}

{% macro default__day_spine(start_date, end_date) -%}
    {{ dbt.date_spine(
        datepart="day",
        start_date="cast('" ~ start_date ~ "' as date)",
        end_date="cast('" ~ end_date ~ "' as date)",
    ) }}
{%- endmacro %}

{#- dbt's spine cross-joins powers of two, 17 s for 16 years on a local Spark; sequence() makes the days at once -#}
{% macro spark__day_spine(start_date, end_date) -%}
    select explode(sequence(date'{{ start_date }}', date_sub(date'{{ end_date }}', 1), interval 1 day)) as date_day
{%- endmacro %}
