{#- The rows one data_quality check found dirty, reported as this test's failures (dbt counts them
    with `fail_calc`), so dbt's results and the mart agree. Set `severity: warn`: dirty input is
    counted, it never stops a build. -#}
{% test dirty_input(model, check) %}
    {{ config(fail_calc='coalesce(sum(affected_rows), 0)', warn_if='>0', error_if='>0') }}
    select check_name, affected_rows
    from {{ model }}
    where check_name = '{{ check }}'
{% endtest %}

{#- Checks whose share of dirty rows is beyond their budget, on enough rows to mean it: then a
    cleaning rule or a loader is broken, not a record, and the build fails. -#}
{% test dirty_input_within_budget(model, min_checked_rows=100) %}
    select check_name, affected_rate, max_affected_rate, checked_rows
    from {{ model }}
    where checked_rows >= {{ min_checked_rows }} and affected_rate > max_affected_rate
{% endtest %}
