{#- Fails (or warns) for every row where the column is not null: counts flagged rows. -#}
{% test is_null(model, column_name) %}
    select * from {{ model }} where {{ column_name }} is not null
{% endtest %}
