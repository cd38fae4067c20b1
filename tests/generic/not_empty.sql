{#- The model has at least one row: an empty mart built from a non-empty bronze means the pipeline,
    not the input, is broken (a wrong join, a filter that drops everything). -#}
{% test not_empty(model) %}
    select 'no rows' as problem
    where not exists (select 1 from {{ model }})
{% endtest %}
