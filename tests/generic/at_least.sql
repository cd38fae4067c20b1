{#- Every non-null value of the column is at least min_value. -#}
{% test at_least(model, column_name, min_value) %}
    select * from {{ model }} where {{ column_name }} < {{ min_value }}
{% endtest %}
